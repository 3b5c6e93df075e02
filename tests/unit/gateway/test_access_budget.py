"""The budget of unauthenticated requests written to the access log one by one, and the
access_summarized event that counts the rest (a fake clock, no sleeping)."""

from __future__ import annotations

import datetime as dt

import pytest

from gateway.accesslog import (
    ACCESS_SUMMARIZED,
    MAX_SUMMARY_ROWS,
    REGISTRY,
    UnauthenticatedBudget,
    summary_event,
)
from kernel.envelope import Envelope


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_past_the_limit_requests_are_counted_not_written():
    clock = FakeClock()
    budget = UnauthenticatedBudget(limit=3, seconds=60, clock=clock)
    written = [budget.admit("GET", "/v1/tenant", 401) for _ in range(100)]
    assert written == [True] * 3 + [False] * 97
    assert budget.ended() == []  # the interval has not ended

    clock.now += 60
    (summary,) = budget.ended()
    assert (summary.written, summary.counted) == (3, 97)
    assert summary.requests == {("GET", "/v1/tenant", 401): 97}
    assert summary.started_at == dt.datetime.fromtimestamp(999_960, dt.UTC)
    assert summary.ended_at == dt.datetime.fromtimestamp(1_000_020, dt.UTC)
    assert budget.ended() == []  # handed out once
    # A new interval writes its first requests one by one again.
    assert budget.admit("GET", "/v1/tenant", 401)


def test_an_interval_that_counted_nothing_has_no_summary():
    clock = FakeClock()
    budget = UnauthenticatedBudget(limit=3, seconds=60, clock=clock)
    budget.admit("GET", "/healthz", 200)
    clock.now += 600
    assert budget.ended() == []


def test_a_final_summary_counts_the_current_interval_so_far():
    clock = FakeClock()
    budget = UnauthenticatedBudget(limit=0, seconds=60, clock=clock)
    budget.admit("POST", "/v1/signup", 429)
    (summary,) = budget.ended(final=True)
    assert summary.counted == 1 and summary.ended_at == dt.datetime.fromtimestamp(clock.now, dt.UTC)
    # The interval's limit still holds after a final summary.
    assert not budget.admit("POST", "/v1/signup", 429)


def test_a_client_cannot_grow_the_summary_with_made_up_methods_or_statuses():
    budget = UnauthenticatedBudget(limit=0, seconds=60, clock=FakeClock())
    for n in range(MAX_SUMMARY_ROWS * 3):
        budget.admit(f"M{n}", "<unmatched>", 100 + n % 500)
    (summary,) = budget.ended(final=True)
    assert summary.counted == MAX_SUMMARY_ROWS * 3
    assert len(summary.requests) <= MAX_SUMMARY_ROWS
    assert {method for method, _, _ in summary.requests} == {"OTHER"}


def test_the_summary_event_names_no_one_and_validates():
    clock = FakeClock()
    budget = UnauthenticatedBudget(limit=1, seconds=60, clock=clock)
    for status in (401, 401, 404):
        budget.admit("GET", "/v1/tenant", status)
    (summary,) = budget.ended(final=True)
    envelope = summary_event(summary)
    assert envelope.type == "access_summarized" and envelope.source == "gateway"
    assert envelope.tenant_id is None and envelope.actor_id is None and envelope.trace == {}
    assert envelope.payload["requests"] == [
        {"method": "GET", "route": "/v1/tenant", "status": 401, "count": 1},
        {"method": "GET", "route": "/v1/tenant", "status": 404, "count": 1},
    ]
    assert (envelope.payload["written"], envelope.payload["counted"]) == (1, 2)
    assert set(envelope.payload) == {"started_at", "ended_at", "written", "counted", "requests"}
    loaded = Envelope.from_dict(envelope.to_dict())
    assert REGISTRY[loaded.type] is ACCESS_SUMMARIZED
    assert REGISTRY.upcast(loaded).payload == envelope.payload


@pytest.mark.parametrize("kwargs", [{"limit": -1, "seconds": 60}, {"limit": 1, "seconds": 0}])
def test_nonsense_budgets_are_refused(kwargs):
    with pytest.raises(ValueError):
        UnauthenticatedBudget(**kwargs)
