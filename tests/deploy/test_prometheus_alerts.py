"""deploy/prometheus/alerts.yml: the alerts docs/operations.md describes, valid for Prometheus
(``promtool check rules``), firing and staying quiet as their unit tests say (``promtool test
rules deploy/prometheus/alerts_test.yml``), on metrics the platform writes, each read the way it
adds up across replicas.

promtool comes with Debian's ``prometheus`` package (.ci/run installs it). Without it the
promtool tests skip, except in CI (``CI=true``), where they fail: there it must be installed.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.promql import metric_names, misread

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
GUIDE = ROOT / "docs" / "operations.md"
SECTION = "## Dashboard and alerts"


@pytest.fixture
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):  # CI=true: as the console's browser tests
            pytest.fail("promtool is missing: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    return found


def alerts() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def run(promtool: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def guide_commands() -> list[list[str]]:
    """The promtool commands docs/operations.md tells an operator to run."""
    section = GUIDE.read_text().split(SECTION, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    lines = (line.split("#", 1)[0].strip() for block in blocks for line in block.splitlines())
    return [shlex.split(line) for line in lines if line.startswith("promtool ")]


def test_the_guides_promtool_commands_check_the_rules_and_pass_their_unit_tests(promtool):
    commands = guide_commands()
    assert [c[:3] for c in commands] == [
        ["promtool", "check", "rules"],
        ["promtool", "test", "rules"],
    ]
    assert {c[3] for c in commands} == {
        str(RULES.relative_to(ROOT)),
        str(RULE_TESTS.relative_to(ROOT)),
    }
    for command in commands:
        result = run(promtool, *command[1:])
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS" in result.stdout + result.stderr


def test_promtool_refuses_a_rule_that_is_not_promql(promtool, tmp_path):
    broken = tmp_path / "alerts.yml"
    rule = "max by (queue) (ledgerdesk_dead_letters) > 0"
    broken.write_text(RULES.read_text().replace(rule, rule.replace(") >", " >")))
    result = run(promtool, "check", "rules", str(broken))
    assert result.returncode != 0


def test_the_unit_tests_fail_on_an_alert_that_sums_what_every_replica_reports(promtool, tmp_path):
    # Two replicas report 3 dead letters each: summed, the alert would say 6.
    (tmp_path / "alerts.yml").write_text(
        RULES.read_text().replace(
            "max by (queue) (ledgerdesk_dead_letters)", "sum by (queue) (ledgerdesk_dead_letters)"
        )
    )
    shutil.copy(RULE_TESTS, tmp_path / "alerts_test.yml")
    result = run(promtool, "test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert 'summary="6 dead letters in tickets.accounts.dead"' in result.stdout + result.stderr


def test_every_alert_reads_metrics_the_platform_writes_the_way_they_add_up():
    rules = alerts()
    assert all("alert" in rule for rule in rules)
    assert {rule["alert"]: misread(rule["expr"]) for rule in rules if misread(rule["expr"])} == {}
    used = set().union(*(metric_names(rule["expr"]) for rule in rules))
    # The alerts docs/operations.md describes, and the two gauges made for them.
    assert {
        "ledgerdesk_dead_letters",
        "ledgerdesk_outbox_oldest_seconds",
        "ledgerdesk_messages_handled_total",
        "ledgerdesk_redeliveries_total",
        "ledgerdesk_http_requests_total",
        "ledgerdesk_failed_authentications_total",
        "ledgerdesk_privacy_requests_overdue",
        "ledgerdesk_audit_checkpoint_age_seconds",
    } <= used


def test_every_alert_is_named_in_the_guide_with_a_severity_and_a_summary():
    guide = GUIDE.read_text()
    for rule in alerts():
        assert f"`{rule['alert']}`" in guide, rule["alert"]
        assert rule["labels"]["severity"] in ("page", "ticket"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
