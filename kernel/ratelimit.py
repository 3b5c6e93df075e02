"""Token buckets per key, held in this process's memory: ``burst`` at once, then ``rate`` a
second. Shared code for limits outside the gateway (the gateway's own limiter, with its
HTTP quota headers, is ``gateway.ratelimit``); the inbound mail listener limits per peer and
per envelope sender with it (``kernel.mail.listener``).

Keys are never logged; at most ``max_keys`` buckets are kept, the least recently used dropped
first, and a dropped bucket comes back full, which only ever errs towards admitting.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable


class TokenBuckets:
    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ):
        if not rate > 0:
            raise ValueError("rate must be positive")
        if burst < 1 or max_keys < 1:
            raise ValueError("burst and max_keys must be at least 1")
        self.rate, self.burst, self.max_keys = float(rate), burst, max_keys
        self._clock = clock
        # key -> (tokens, when they were counted)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        # Nothing blocks while it is held: serves OS threads and greenthreads alike.
        self._lock = threading.Lock()

    def take(self, key: str) -> bool:
        """Take a token for ``key``: False, taking nothing, when there is none left."""
        with self._lock:
            now = self._clock()
            tokens, then = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - then) * self.rate)
            admitted = tokens >= 1.0
            self._buckets[key] = (tokens - 1.0 if admitted else tokens, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
            return admitted
