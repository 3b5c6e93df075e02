"""deploy/grafana/ledgerdesk.json: a Grafana dashboard any Prometheus data source can be chosen
for, laid out without overlaps, whose every query reads metrics the platform writes (or
RabbitMQ's Prometheus plugin documents), each the way it adds up across replicas."""

from __future__ import annotations

import copy
import json
import re
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest

from tests.support.promql import metric_names, misread

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "ledgerdesk.json"
PANEL_TYPES = {"row", "timeseries", "stat"}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# What an operator opens it for (issue 22): the request path, queues, the outbox, dead letters,
# privacy requests by state and age, and the ledger's checkpoint age.
SHOWN = {
    "ledgerdesk_http_requests_total",
    "ledgerdesk_http_request_seconds_bucket",
    "rabbitmq_queue_messages_ready",
    "rabbitmq_queue_messages_unacked",
    "ledgerdesk_outbox_lag_events",
    "ledgerdesk_outbox_oldest_seconds",
    "ledgerdesk_dead_letters",
    "ledgerdesk_privacy_requests_open",
    "ledgerdesk_privacy_requests_oldest_seconds",
    "ledgerdesk_privacy_requests_overdue",
    "ledgerdesk_audit_checkpoint_age_seconds",
}


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    found = []
    for panel in board["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def queries(board: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the panels, and the metric of each label_values() variable."""
    exprs = [target["expr"] for panel in panels(board) for target in panel.get("targets", [])]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else ""
            match = re.fullmatch(r"label_values\(\s*([^,]+?)\s*,\s*\w+\s*\)", query)
            assert match, f"{variable['name']}: {query!r} is not label_values(metric, label)"
            exprs.append(match.group(1))
    return exprs


def shape_problems(board: dict[str, Any]) -> list[str]:
    """Where the dashboard is not one Grafana imports and lays out as meant."""
    problems = []
    for key, kind in (("title", str), ("uid", str), ("schemaVersion", int), ("panels", list)):
        if not isinstance(board.get(key), kind):
            problems.append(f"{key} is not a {kind.__name__}")
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", str(board.get("uid"))):
        problems.append("the uid is not 1-40 letters, digits, - or _")
    variables = {v["name"]: v for v in board.get("templating", {}).get("list", [])}
    source = variables.get("datasource", {})
    if (source.get("type"), source.get("query")) != ("datasource", "prometheus"):
        problems.append("no datasource variable choosing a Prometheus data source")
    ids = [panel.get("id") for panel in panels(board)]
    if len(ids) != len(set(ids)) or not all(isinstance(i, int) for i in ids):
        problems.append("panel ids are not distinct integers")
    boxes = []
    for panel in panels(board):
        name = panel.get("title") or f"panel {panel.get('id')}"
        if panel.get("type") not in PANEL_TYPES:
            problems.append(f"{name}: type {panel.get('type')!r}")
        box = panel.get("gridPos", {})
        x, y, w, h = (box.get(k) for k in ("x", "y", "w", "h"))
        if not all(isinstance(v, int) for v in (x, y, w, h)) or x < 0 or w < 1 or x + w > 24:
            problems.append(f"{name}: gridPos {box} is not inside the 24 columns")
            continue
        boxes.append((name, x, y, w, h))
        if panel["type"] == "row":
            continue
        if not panel.get("title") or not panel.get("description"):
            problems.append(f"{name}: a panel needs a title and a description")
        targets = panel.get("targets") or []
        if not targets:
            problems.append(f"{name}: no query")
        if len({t.get("refId") for t in targets}) != len(targets):
            problems.append(f"{name}: refIds repeat")
        for holder in (panel, *targets):
            if holder.get("datasource") != DATASOURCE:
                problems.append(f"{name}: not on the chosen data source (${{datasource}})")
        if any(not str(t.get("expr", "")).strip() for t in targets):
            problems.append(f"{name}: an empty query")
    for (a, ax, ay, aw, ah), (b, bx, by, bw, bh) in combinations(boxes, 2):
        if ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah:
            problems.append(f"{a} and {b} overlap")
    return problems


def test_the_dashboard_is_one_grafana_imports_on_any_prometheus():
    assert shape_problems(dashboard()) == []


def test_the_shape_check_finds_what_would_break_an_import():
    board = dashboard()
    board["uid"] = "not a uid!"
    first, second = [p for p in panels(board) if p["type"] != "row"][:2]
    second["gridPos"] = dict(first["gridPos"])
    first["targets"][0]["datasource"] = {"type": "prometheus", "uid": "P1809F7CD0C75ACF3"}
    del board["templating"]
    problems = shape_problems(board)
    assert "the uid is not 1-40 letters, digits, - or _" in problems
    assert f"{first['title']} and {second['title']} overlap" in problems
    assert f"{first['title']}: not on the chosen data source (${{datasource}})" in problems
    assert "no datasource variable choosing a Prometheus data source" in problems


def test_every_query_reads_a_metric_that_exists_the_way_it_adds_up():
    board = dashboard()
    assert {q: misread(q) for q in queries(board) if misread(q)} == {}
    used = set().union(*(metric_names(q) for q in queries(board)))
    assert SHOWN - used == set()


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("sum(rate(ledgerdesk_http_request_total[5m]))", "ledgerdesk_http_request_total is not"),
        ("rabbitmq_queue_messages_waiting", "rabbitmq_queue_messages_waiting is not"),
        ("sum by (queue) (ledgerdesk_dead_letters)", "ledgerdesk_dead_letters (the same in"),
        ("ledgerdesk_outbox_lag_events", "ledgerdesk_outbox_lag_events (the same in"),
        ("sum(ledgerdesk_http_requests_total)", "ledgerdesk_http_requests_total (a counter)"),
    ],
)
def test_the_query_check_finds_a_wrong_name_a_summed_gauge_and_a_raw_counter(expr, problem):
    board = copy.deepcopy(dashboard())
    board["panels"][1]["targets"][0]["expr"] = expr
    assert any(p.startswith(problem) for q in queries(board) for p in misread(q))


def test_metric_names_skips_functions_labels_ranges_and_variables():
    expr = (
        'histogram_quantile(0.99, sum by (le, route) (rate(a_bucket{route=~"/v1/{x}"}'
        "[$__rate_interval]))) / on() group_left b > 1e3 and bool c offset 5m"
    )
    assert metric_names(expr) == {"a_bucket", "b", "c"}
