"""The benchmark harness still runs: one cheap section end to end, at its quick size.

Speed is not asserted here (the figures are the benchmark's business); what is checked is that
the section ran against real PostgreSQL, produced its rows, and wrote the record and the chart.
"""

from __future__ import annotations

import functools
import json
import math

from bench import search
from bench.__main__ import run

ROW_KEYS = {
    "section",
    "measure",
    "ours",
    "unit",
    "baseline",
    "baseline_name",
    "ratio",
    "target",
    "met",
    "note",
}


def test_the_quick_event_store_section_writes_its_record_and_chart(infrastructure, tmp_path):
    record, rows = run({"eventstore"}, quick=True, out=tmp_path, infrastructure=infrastructure)

    assert record["failures"] == {}
    written = json.loads((tmp_path / f"{record['date']}-quick.json").read_text())
    assert written["quick"] is True and written["sections"] == ["eventstore"]
    assert written["machine"]["cores"] >= 1
    assert [r["measure"] for r in written["rows"]] == [
        "append throughput",
        "catch-up read of 10,000 events",
    ]
    for row in written["rows"]:
        assert set(row) == ROW_KEYS
        assert row["section"] == "eventstore"
        assert row["ours"] > 0 and row["baseline"] > 0
        assert math.isclose(row["ratio"], row["ours"] / row["baseline"])
        assert row["met"] is (row["ratio"] >= 1)
    assert (tmp_path / f"{record['date']}-quick.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(rows) == 2


def test_the_quick_cards_section_measures_every_figure(infrastructure, tmp_path):
    record, rows = run({"cards"}, quick=True, out=tmp_path, infrastructure=infrastructure)

    assert record["failures"] == {}
    assert [row.measure for row in rows] == [
        "no-card check, ticket-like text, 1 MiB",
        "no-card check, ticket-like text, 4 KiB, a typical request",
        "redaction, ticket-like text with a card every 4 KiB, 1 MiB",
        "no-card check, worst case: 1 MiB of digits and separators",
        "redaction, worst case: 1 MiB of digits and separators",
        "no-card check, worst case: a 1 MiB JSON body of small values",
        "load_command of a contact (check + schema)",
    ]
    for row in rows:
        assert row.section == "cards" and row.ours > 0
        assert row.baseline is None or row.baseline > 0


def test_the_search_section_runs_at_a_small_size(infrastructure, tmp_path):
    """Its quick size (2,000 tickets in 20,000) takes 30-40 s here, too long for this file; 300
    in 1,000 run the same code: the tenant through the kernel, the copies, the plaintext table,
    every query both ways (the section fails a query whose two answers differ in size)."""
    size = search.Size(tenant=300, database=1_000, queries=12)
    runner = functools.partial(search.run, size=size)
    record, rows = run(
        {"search"},
        quick=True,
        out=tmp_path,
        infrastructure=infrastructure,
        runners=[({"search"}, runner)],
    )

    assert record["failures"] == {}
    assert [row.measure for row in rows] == [
        "search p50",
        "search p99",
        "search p50, frequent words",
        "search p50, rare words",
        "search p50, prefixes",
        "index size",
        "index rows per ticket",
    ]
    assert rows[0].note.startswith("300 tickets in the tenant, 1,000 in the database; 12 of 12")
    for row in rows:
        assert row.section == "search" and row.ours > 0 and row.baseline and row.baseline > 0
