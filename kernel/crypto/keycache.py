"""The keystore's in-process cache of unwrapped subject keys, timed by a clock it is given.

An entry lives ``seconds`` by ``clock`` (``time.monotonic`` unless a test hands it a clock it
moves itself, so a test passes a TTL without sleeping). A shred in this process drops the
entries it concerns at once and bumps a count, so a key loaded while a shred committed is not
cached after it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

# Above this many cached keys, expired entries are dropped (and, failing that, all of them).
_CACHE_LIMIT = 100_000


@dataclass(frozen=True, slots=True)
class Entry:
    tenant_id: UUID
    key: bytes | None  # None: the subject, its parent or its tenant was erased: permanent
    expires: float
    # Kept so that shredding a parent can drop its children's entries from this process's cache.
    parent_id: UUID | None = None


class KeyCache:
    """Subject keys by subject id, each for ``seconds`` (none are kept at 0)."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = max(0.0, float(seconds))
        self._clock = clock
        self._entries: dict[UUID, Entry] = {}
        self._lock = threading.Lock()
        # Bumped by every shred in this process: a key loaded before a shred committed is not
        # cached after it, so this process forgets an erased key at once even mid-load.
        self._shreds = 0

    @property
    def enabled(self) -> bool:
        return self.seconds > 0

    def get(self, subject_id: UUID) -> Entry | None:
        with self._lock:
            entry = self._entries.get(subject_id)
            if entry is not None and entry.expires <= self._clock():
                del self._entries[subject_id]
                return None
            return entry

    def shreds_seen(self) -> int:
        """What to hand ``put`` with an entry about to be loaded."""
        with self._lock:
            return self._shreds

    def put(self, subject_id: UUID, entry: Entry, shreds_seen: int) -> None:
        if self.seconds <= 0:
            return
        now = self._clock()
        with self._lock:
            if self._shreds != shreds_seen:
                return  # a shred ran while this entry was loaded: it may be stale
            if len(self._entries) >= _CACHE_LIMIT:
                self._entries = {s: e for s, e in self._entries.items() if e.expires > now}
                if len(self._entries) >= _CACHE_LIMIT:
                    self._entries.clear()
            self._entries[subject_id] = Entry(
                entry.tenant_id, entry.key, now + self.seconds, entry.parent_id
            )

    def forget_subjects(self, subject_ids: set[UUID]) -> None:
        """Drop the subjects' entries and those of their children."""
        with self._lock:
            self._shreds += 1
            for subject_id in [
                s
                for s, e in self._entries.items()
                if s in subject_ids or e.parent_id in subject_ids
            ]:
                del self._entries[subject_id]

    def forget_tenant(self, tenant_id: UUID) -> None:
        with self._lock:
            self._shreds += 1
            for subject_id in [s for s, e in self._entries.items() if e.tenant_id == tenant_id]:
                del self._entries[subject_id]
