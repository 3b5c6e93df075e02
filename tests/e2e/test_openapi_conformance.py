"""schemathesis against the running gateway: no 5xx, and no answer that breaks the published spec.

Cases come from /v1/openapi.json itself, so an endpoint, a status or a field the document does
not declare shows up here as a failure.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.service import ROUTES
from tests.e2e.conftest import Stack, running_stack

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def api(infrastructure) -> Iterator[tuple[Stack, str]]:
    # A generous rate limit: the point here is the answers, not the limiter.
    with running_stack(
        infrastructure, LEDGERDESK_RATE_LIMIT="100000", LEDGERDESK_RATE_BURST="100000"
    ) as stack:
        admin_key = stack.sign_up()["api_key"]
        yield stack, admin_key


def exercise(operation, base_url: str, headers: dict[str, str]) -> None:
    """Up to 30 generated requests for one operation, each checked against the spec."""

    @given(case=operation.as_strategy())
    @settings(
        max_examples=30,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case):
        case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS)

    run()


# The gateway's routes, to name one test per operation; the cases themselves come from the
# document the running gateway serves (the two are compared below).
OPERATIONS = sorted(
    (r.method, r.path) for r in ROUTES if r.documented and r.path != "/v1/openapi.json"
)


def test_the_served_document_is_the_built_one(api):
    stack, _ = api
    schema = schemathesis.openapi.from_url(f"{stack.url}/v1/openapi.json")
    served = {(r.ok().method.lower(), r.ok().path) for r in schema.get_all_operations()}
    # schemathesis leaves out the document's own URL; everything else is exercised.
    assert served == set(OPERATIONS)


@pytest.fixture(scope="module")
def served(api):
    stack, _ = api
    schema = schemathesis.openapi.from_url(f"{stack.url}/v1/openapi.json")
    return {(r.ok().method.lower(), r.ok().path): r.ok() for r in schema.get_all_operations()}


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_the_operation_answers_within_its_spec(api, served, method, path):
    stack, admin_key = api
    operator = "/operator/" in path or path == "/metrics"
    token = stack.settings.operator_token if operator else admin_key
    exercise(served[(method, path)], stack.url, {"Authorization": f"Bearer {token}"})
