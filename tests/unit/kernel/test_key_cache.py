"""The keystore's cache of subject keys, timed by a clock the test moves: no sleeping."""

import uuid

from kernel.crypto.keycache import Entry, KeyCache
from kernel.testing import ManualClock

TENANT = uuid.uuid4()


def test_an_entry_lives_its_seconds_by_the_clock_it_was_given():
    clock = ManualClock()
    cache = KeyCache(30, clock)
    subject = uuid.uuid4()
    cache.put(subject, Entry(TENANT, b"k" * 32, 0.0), cache.shreds_seen())
    clock.advance(29.9)
    assert cache.get(subject) is not None
    clock.advance(0.1)
    assert cache.get(subject) is None


def test_a_key_loaded_while_a_shred_ran_is_not_cached():
    cache = KeyCache(30, ManualClock())
    subject = uuid.uuid4()
    seen = cache.shreds_seen()
    cache.forget_subjects({uuid.uuid4()})
    cache.put(subject, Entry(TENANT, b"k" * 32, 0.0), seen)
    assert cache.get(subject) is None


def test_shredding_a_parent_or_a_tenant_drops_what_hangs_from_it():
    cache = KeyCache(30, ManualClock())
    parent, child, other_tenant_subject = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    cache.put(parent, Entry(TENANT, b"p" * 32, 0.0), cache.shreds_seen())
    cache.put(child, Entry(TENANT, b"c" * 32, 0.0, parent), cache.shreds_seen())
    cache.put(other_tenant_subject, Entry(uuid.uuid4(), b"o" * 32, 0.0), cache.shreds_seen())
    cache.forget_subjects({parent})
    assert cache.get(parent) is None and cache.get(child) is None
    assert cache.get(other_tenant_subject) is not None
    cache.forget_tenant(TENANT)
    assert cache.get(other_tenant_subject) is not None


def test_nothing_is_kept_at_zero_seconds():
    cache = KeyCache(0, ManualClock())
    subject = uuid.uuid4()
    cache.put(subject, Entry(TENANT, b"k" * 32, 0.0), cache.shreds_seen())
    assert not cache.enabled and cache.get(subject) is None
