"""schemathesis against the running gateway, with every check it has (the CLI's ``--checks
all``): no 5xx, no answer that breaks the published document, every request the document calls
valid accepted and every one it calls invalid refused, required headers required, methods it
does not list refused, authentication not ignored, a deleted resource gone and a created one
there. Zero failures is the bar.

Cases come from /v1/openapi.json itself, so an endpoint, a status, a field or a format the
document does not declare exactly shows up here as a failure. Credentials come from
``tests/e2e/schemathesis_auth.py`` (a fresh tenant whenever a request ended the last one's key);
the checks' settings from ``tests/e2e/schemathesis.toml``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis

from gateway.service import ROUTES
from tests.e2e.conftest import Stack, running_stack

ROOT = Path(__file__).resolve().parents[2]
CONFIG = Path(__file__).with_name("schemathesis.toml")
# Modest, to keep `make test` in minutes: every operation still gets its coverage cases
# (boundaries, missing parameters, wrong types, other methods) besides these random ones.
EXAMPLES = 10


@pytest.fixture(scope="module")
def api(infrastructure) -> Iterator[Stack]:
    # Generous limits: the point here is the answers, not the limiter; the credentials hook
    # signs a tenant up whenever a request ended the last one's key.
    with running_stack(
        infrastructure,
        LEDGERDESK_RATE_LIMIT="100000",
        LEDGERDESK_RATE_BURST="100000",
        LEDGERDESK_SIGNUP_RATE_LIMIT="100000",
        LEDGERDESK_SIGNUP_BURST="100000",
    ) as stack:
        yield stack


# The gateway's routes; the cases themselves come from the document the running gateway
# serves (the two are compared below).
OPERATIONS = sorted(
    (r.method, r.path) for r in ROUTES if r.documented and r.path != "/v1/openapi.json"
)


def test_the_served_document_is_the_built_one(api):
    schema = schemathesis.openapi.from_url(f"{api.url}/v1/openapi.json")
    served = {(r.ok().method.lower(), r.ok().path) for r in schema.get_all_operations()}
    # schemathesis leaves out the document's own URL; everything else is exercised.
    assert served == set(OPERATIONS)


@pytest.mark.timeout(900)
def test_every_check_passes_on_every_operation(api, tmp_path):
    env = {
        **os.environ,
        "LEDGERDESK_CONFORMANCE_URL": api.url,
        "LEDGERDESK_CONFORMANCE_OPERATOR_TOKEN": api.settings.operator_token,
        "SCHEMATHESIS_HOOKS": "tests.e2e.schemathesis_auth",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    command = [str(Path(sys.executable).with_name("schemathesis")), "--config-file", str(CONFIG)]
    command += ["run", f"{api.url}/v1/openapi.json", "--checks", "all"]
    command += ["--max-examples", str(EXAMPLES), "--workers", "2", "--no-color"]
    # Its working files (.schemathesis/) go to a directory of the test's own.
    run = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True)
    report = run.stdout + run.stderr
    # From the first section (errors, failures, warnings) on: what to fix, and how to replay it.
    shown = report[report.find("\n====") :][:60000]
    assert run.returncode == 0, shown
    # Tested for real: no operation answered nothing but 401/403 (credentials that failed).
    assert "Authentication failed" not in report, shown
    # Every operation selected and tested, none errored (the document's own URL is one more).
    selected = re.search(r"Selected: (\d+)/(\d+)", report)
    tested = re.search(r"Tested: (\d+)", report)
    assert selected and tested, shown
    assert int(tested[1]) == int(selected[1]) == int(selected[2]) == len(OPERATIONS) + 1
