"""Unit tests for the per-key token bucket (a fake clock, no sleeping) and its 429 mapping."""

from __future__ import annotations

import json
import threading

import pytest
from nameko.exceptions import deserialize, serialize

from gateway import problems
from gateway.ratelimit import Quota, RateLimited, RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def refusal(limiter: RateLimiter, key: str) -> RateLimited:
    with pytest.raises(RateLimited) as caught:
        limiter.check(key)
    return caught.value


def test_a_burst_is_admitted_then_refused_with_the_seconds_until_a_token():
    clock = FakeClock()
    limiter = RateLimiter(rate=0.5, burst=3, clock=clock)

    for _ in range(3):
        limiter.check("k")

    assert refusal(limiter, "k").retry_after == 2  # one token per 2 s
    clock.advance(0.5)
    assert refusal(limiter, "k").retry_after == 2  # 1.5 s left, rounded up
    clock.advance(1.0)
    assert refusal(limiter, "k").retry_after == 1  # 0.5 s left, never 0


def test_each_admission_tells_what_is_left_and_when_the_bucket_is_full_again():
    clock = FakeClock()
    limiter = RateLimiter(rate=0.5, burst=3, clock=clock)

    assert limiter.check("k") == Quota(limit=3, remaining=2, reset=2)
    assert limiter.check("k") == Quota(limit=3, remaining=1, reset=4)
    clock.advance(1.0)  # half a token back
    assert limiter.check("k") == Quota(limit=3, remaining=0, reset=5)
    refused = refusal(limiter, "k")
    assert (refused.limit, refused.quota) == (3, Quota(limit=3, remaining=0, reset=1))
    assert refused.quota.headers() == {
        "RateLimit-Limit": "3",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": "1",
    }


def test_a_refusal_takes_no_token():
    clock = FakeClock()
    limiter = RateLimiter(rate=1, burst=1, clock=clock)
    limiter.check("k")
    for _ in range(5):
        refusal(limiter, "k")

    clock.advance(1.0)

    limiter.check("k")


def test_tokens_refill_at_the_rate_up_to_the_burst():
    clock = FakeClock()
    limiter = RateLimiter(rate=2, burst=4, clock=clock)
    for _ in range(4):
        limiter.check("k")

    clock.advance(1.0)  # two tokens back
    limiter.check("k")
    limiter.check("k")
    refusal(limiter, "k")

    clock.advance(3600)  # a long pause refills to the burst, no further
    for _ in range(4):
        limiter.check("k")
    refusal(limiter, "k")


def test_a_fast_rate_still_asks_for_at_least_a_second():
    clock = FakeClock()
    limiter = RateLimiter(rate=100, burst=1, clock=clock)
    limiter.check("k")

    assert refusal(limiter, "k").retry_after == 1


def test_keys_are_independent():
    clock = FakeClock()
    limiter = RateLimiter(rate=1, burst=2, clock=clock)
    limiter.check("a")
    limiter.check("a")
    refusal(limiter, "a")

    limiter.check("b")
    limiter.check("b")
    refusal(limiter, "b")


def test_a_clock_stepping_back_does_not_drain_the_bucket():
    clock = FakeClock()
    limiter = RateLimiter(rate=1, burst=2, clock=clock)
    limiter.check("k")
    clock.advance(-50)

    limiter.check("k")


def test_buckets_are_bounded_and_the_least_recently_used_goes_first():
    clock = FakeClock()
    limiter = RateLimiter(rate=0.001, burst=1, clock=clock, max_keys=3)
    for key in ("a", "b", "c"):
        limiter.check(key)
    refusal(limiter, "a")  # "a" is now the most recently used; "b" the least

    limiter.check("d")

    assert len(limiter) == 3
    limiter.check("b")  # evicted, so it came back with a full bucket (evicting "c")
    refusal(limiter, "a")
    refusal(limiter, "d")
    assert len(limiter) == 3

    for i in range(1000):
        limiter.check(f"key-{i}")
    assert len(limiter) == 3


def test_concurrent_callers_share_one_burst():
    limiter = RateLimiter(rate=0.001, burst=25, clock=FakeClock())
    admitted: list[bool] = []
    barrier = threading.Barrier(20)

    def call() -> None:
        barrier.wait()
        for _ in range(5):
            try:
                limiter.check("k")
                admitted.append(True)
            except RateLimited:
                admitted.append(False)

    threads = [threading.Thread(target=call) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert admitted.count(True) == 25
    assert admitted.count(False) == 75


@pytest.mark.parametrize(
    "kwargs",
    [{"rate": 0, "burst": 1}, {"rate": 1, "burst": 0}, {"rate": 1, "burst": 1, "max_keys": 0}],
)
def test_nonsense_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        RateLimiter(**kwargs)


def test_rate_limited_is_at_least_one_whole_second():
    assert RateLimited(0).retry_after == 1
    assert RateLimited(2.2).retry_after == 3


def test_rate_limited_survives_the_nameko_round_trip():
    received = deserialize(json.loads(json.dumps(serialize(RateLimited(7)))))

    assert type(received) is RateLimited
    assert received.retry_after == 7
    assert received.detail == "too many requests; retry in 7 s"


def test_rate_limited_is_429_with_retry_after():
    response = problems.from_exception(RateLimited(12))

    assert response.status_code == 429
    assert response.mimetype == "application/problem+json"
    assert response.headers["Retry-After"] == "12"
    assert json.loads(response.get_data()) == {
        "type": "/docs/problems#rate-limited",
        "title": "Too many requests",
        "status": 429,
        "detail": "too many requests; retry in 12 s",
    }


def test_a_failure_bucket_is_checked_without_taking_and_spent_by_failures():
    clock = FakeClock()
    failures = RateLimiter(rate=0.1, burst=2, clock=clock)
    for _ in range(5):
        failures.ensure("a")  # checking takes nothing
    failures.spend("a")
    failures.spend("a")
    failures.spend("a")  # never below empty: the wait stays one token's
    with pytest.raises(RateLimited) as caught:
        failures.ensure("a")
    assert caught.value.retry_after == 10
    failures.ensure("b")  # another address is untouched
    clock.advance(10)
    failures.ensure("a")
