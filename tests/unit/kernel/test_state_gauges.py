"""State gauges (``kernel.observability``): declared once, read when scraped, all or nothing, and
saying in their help text how replicas add up."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kernel.observability import (
    DEAD_LETTERS,
    OUTBOX_LAG,
    OUTBOX_OLDEST,
    SAME_IN_EVERY_REPLICA,
    STATE_GAUGES,
    StateGauge,
    StateSample,
    state_families,
    state_gauge,
)

WAITING = StateGauge("ledgerdesk_test_waiting", "Things waiting", ("state",))
OLDEST = StateGauge("ledgerdesk_test_oldest_seconds", "Age of the oldest thing waiting", ())


def rendered(read) -> dict[str, list[tuple[dict[str, str], float]]]:
    """What a scrape shows of WAITING and OLDEST filled by ``read``, by family."""

    class Collector:
        def collect(self):
            return state_families((WAITING, OLDEST), read)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())
    text = generate_latest(registry).decode()
    return {
        family.name: [(sample.labels, sample.value) for sample in family.samples]
        for family in text_string_to_metric_families(text)
    }


def test_a_read_fills_its_gauges_and_the_help_says_how_replicas_add_up():
    def read() -> list[StateSample]:
        return [(WAITING, ("pending",), 3), (WAITING, ("held",), 0), (OLDEST, (), 12.5)]

    assert rendered(read) == {
        "ledgerdesk_test_waiting": [({"state": "pending"}, 3.0), ({"state": "held"}, 0.0)],
        "ledgerdesk_test_oldest_seconds": [({}, 12.5)],
    }
    assert WAITING.family().documentation.endswith(SAME_IN_EVERY_REPLICA)
    assert "max" in SAME_IN_EVERY_REPLICA and "never sum" in SAME_IN_EVERY_REPLICA


def test_a_read_that_fails_half_way_leaves_every_gauge_empty_rather_than_half_true():
    def read() -> Iterator[StateSample]:
        yield (WAITING, ("pending",), 3)
        raise ConnectionError("the database went away")

    # The families stay (their HELP and TYPE lines), with no sample: absent, not zero.
    assert rendered(read) == {"ledgerdesk_test_waiting": [], "ledgerdesk_test_oldest_seconds": []}


def test_a_state_gauge_is_declared_once():
    assert STATE_GAUGES[OUTBOX_LAG.name] is OUTBOX_LAG
    assert {OUTBOX_LAG.name, OUTBOX_OLDEST.name, DEAD_LETTERS.name} <= set(STATE_GAUGES)
    with pytest.raises(ValueError, match="declared twice"):
        state_gauge(OUTBOX_LAG.name, "again")
