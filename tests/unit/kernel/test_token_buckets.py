"""kernel.ratelimit: a bucket per key, its burst, its refill, and its bound on keys."""

from __future__ import annotations

from kernel.ratelimit import TokenBuckets


def test_a_bucket_admits_its_burst_then_refills_at_its_rate():
    now = [0.0]
    buckets = TokenBuckets(rate=0.5, burst=2, clock=lambda: now[0])
    assert [buckets.take("a"), buckets.take("a"), buckets.take("a")] == [True, True, False]
    assert buckets.take("b")  # another key, another bucket
    now[0] = 1.0  # half a token: still none
    assert not buckets.take("a")
    now[0] = 2.0  # a refusal took nothing: one whole token by now
    assert buckets.take("a") and not buckets.take("a")
    now[0] = 100.0  # never more than the burst
    assert [buckets.take("a") for _ in range(3)] == [True, True, False]


def test_past_its_keys_the_oldest_bucket_is_dropped_and_comes_back_full():
    buckets = TokenBuckets(rate=0.001, burst=1, clock=lambda: 0.0, max_keys=2)
    assert buckets.take("a") and not buckets.take("a")
    assert buckets.take("b") and buckets.take("c")  # "a" dropped
    assert buckets.take("a")
