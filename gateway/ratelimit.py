"""Per-API-key rate limiting: a token bucket per key, held in this process's memory.

Each gateway replica limits on its own, so the effective limit across replicas is a multiple of
the configured one; that is accepted, since the limit protects the services from one noisy
client, not a quota that is billed.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from nameko.exceptions import deserialize_to_instance

from kernel.errors import DomainError


@deserialize_to_instance
class RateLimited(DomainError):
    """Too many requests for one key; ``retry_after`` is whole seconds, at least 1, and
    ``limit`` the size of the bucket that refused (0: not known)."""

    def __init__(self, retry_after: float | str, detail: str = "", limit: int | str = 0):
        # A str is how nameko hands the number back from a remote service. Retry-After takes
        # whole seconds, and rounding down could send a client back too early.
        self.retry_after: int = max(1, math.ceil(float(retry_after)))
        self.limit = int(limit)
        super().__init__(detail or f"too many requests; retry in {self.retry_after} s")
        # nameko rebuilds a remote error from ``args``; every field must survive the trip.
        self.args = (self.retry_after, self.detail, self.limit)

    @property
    def quota(self) -> Quota:
        return Quota(self.limit, 0, self.retry_after)


@dataclass(frozen=True)
class Quota:
    """A bucket's state as a client is told it (the ``RateLimit-*`` headers): ``limit``
    requests at once, ``remaining`` of them now, and ``reset`` whole seconds until the bucket
    is full again."""

    limit: int
    remaining: int
    reset: int

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset),
        }


class _Bucket:
    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, updated: float):
        self.tokens = tokens
        self.updated = updated


class RateLimiter:
    """``burst`` requests at once per key, then ``rate`` a second.

    Keys are whatever identifies the caller (a hash of its API key, say). They are never logged
    nor exposed; at most ``max_keys`` buckets are kept, the least recently used dropped first.
    A dropped bucket comes back full, which only ever errs towards admitting a request.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ):
        if not rate > 0:
            raise ValueError("rate must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.rate = float(rate)
        self.burst = burst
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        # Nothing blocks while it is held, so a plain (or eventlet-patched) lock serves both
        # OS threads and greenthreads without ever yielding mid-update.
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._buckets)

    def check(self, key: str) -> Quota:
        """Take a token for ``key`` and say what is left, or raise :class:`RateLimited`; a
        refusal takes nothing."""
        with self._lock:
            bucket = self._refilled(key)
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return self._quota(bucket)
            wait = self._wait(bucket)
        raise RateLimited(wait, limit=self.burst)

    def ensure(self, key: str) -> None:
        """Raise :class:`RateLimited` if ``key`` has no token left, taking none: for a bucket
        that counts failures (``spend``), checked before the work that may fail."""
        with self._lock:
            bucket = self._refilled(key)
            if bucket.tokens >= 1.0:
                return
            wait = self._wait(bucket)
        raise RateLimited(wait, limit=self.burst)

    def spend(self, key: str) -> None:
        """Take a token for ``key`` if one is left (a failure that already happened)."""
        with self._lock:
            bucket = self._refilled(key)
            bucket.tokens = max(0.0, bucket.tokens - 1.0)

    def _refilled(self, key: str) -> _Bucket:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
            self._buckets[key] = bucket
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            # max(): a clock that steps back must not drain the bucket.
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate)
            bucket.updated = now
        return bucket

    def _quota(self, bucket: _Bucket) -> Quota:
        # Rounded up: a client told "full in 0 s" while a fraction is missing would come back
        # early; the same allowance as ``_wait`` for float noise.
        full_in = max(0, math.ceil((self.burst - bucket.tokens) / self.rate - 1e-9))
        return Quota(self.burst, math.floor(bucket.tokens + 1e-9), full_in)

    def _wait(self, bucket: _Bucket) -> int:
        # The small allowance keeps float noise (a wait of 2.0000000001) from adding a second.
        return max(1, math.ceil((1.0 - bucket.tokens) / self.rate - 1e-9))
