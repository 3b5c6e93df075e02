"""The edge, before authentication, over real HTTP against the whole platform as processes: who
the client is behind a trusted proxy, per-address limits before any work (every request,
refused credentials, sign-ups), and an access log that unauthenticated noise cannot flood.

The test client at 127.0.0.1 is the trusted proxy (``LEDGERDESK_TRUSTED_PROXIES``) and names
clients in X-Forwarded-For; connections from other 127/8 addresses are clients of their own,
untrusted (loopback answers from any of them).
"""

from __future__ import annotations

import math
import re
import secrets
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from kernel.config import Settings
from kernel.testing import Infrastructure, wait_until
from tests.e2e.conftest import SIGNUP, Stack, running_stack
from tests.e2e.helpers import AccessLog, SourceAddress, Tap, assert_problem, rows, tap, unique

CLIENT_BURST = 20
FAILURE_BURST = 5
LOG_LIMIT = 5
LOG_SECONDS = 3


@pytest.fixture(scope="module")
def edge(infrastructure: Infrastructure) -> Iterator[Stack]:
    with running_stack(
        infrastructure,
        LEDGERDESK_GATEWAY_PROCESSES="1",  # buckets are per process
        LEDGERDESK_TRUSTED_PROXIES="127.0.0.1/32",
        # Above the readiness probes' pace, so the stack can start; a flood goes past it.
        LEDGERDESK_CLIENT_RATE_LIMIT="5",
        LEDGERDESK_CLIENT_RATE_BURST=str(CLIENT_BURST),
        LEDGERDESK_AUTH_FAILURE_RATE_LIMIT="0.001",
        LEDGERDESK_AUTH_FAILURE_BURST=str(FAILURE_BURST),
        # The defaults a deployment gets (the test world relaxes them).
        LEDGERDESK_SIGNUP_RATE_LIMIT=str(Settings.signup_rate_limit),
        LEDGERDESK_SIGNUP_BURST=str(Settings.signup_burst),
        LEDGERDESK_UNAUTHENTICATED_LOG_LIMIT=str(LOG_LIMIT),
        LEDGERDESK_UNAUTHENTICATED_LOG_SECONDS=str(LOG_SECONDS),
    ) as stack:
        yield stack


_used: set[str] = set()


def _fresh() -> str:
    """A client address found nowhere else (a benchmarking range: only ever a header value)."""
    while True:
        address = (
            f"198.{18 + secrets.randbelow(2)}.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"
        )
        if address not in _used:
            _used.add(address)
            return address


def via_proxy(stack: Stack, client: str, method: str, path: str, **kwargs: Any):
    """A request the trusted proxy (127.0.0.1) forwards for ``client``."""
    headers = {"X-Forwarded-For": client, **kwargs.pop("headers", {})}
    return stack.call(method, path, headers=headers, **kwargs)


def from_address(stack: Stack, source: str, method: str, path: str, key: str | None = None, **kw):
    """A request from a connection of its own at ``source`` (an untrusted peer)."""
    session = requests.Session()
    session.mount("http://", SourceAddress(source))
    headers = dict(kw.pop("headers", {}))
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    try:
        return session.request(method, stack.url + path, headers=headers, timeout=15, **kw)
    finally:
        session.close()


def loopback() -> str:
    """A 127/8 address other than the proxy's."""
    return "127." + ".".join(str(secrets.randbelow(200) + 20) for _ in range(3))


def sign_up(stack: Stack) -> dict[str, Any]:
    version = via_proxy(stack, _fresh(), "GET", "/v1/policies/current").json()["version"]
    response = via_proxy(
        stack, _fresh(), "POST", "/v1/signup", json={**SIGNUP, "accept_policy_version": version}
    )
    assert response.status_code == 201, response.text
    return response.json()


def metric(text: str, name: str, **labels: str) -> float:
    """A sample's value in Prometheus text (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.escape(name) + (r"\{" + re.escape(wanted) + r"\}" if labels else "") + r" (\S+)"
    found = re.search(r"^" + pattern + r"$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def authentications(stack: Stack) -> float:
    """How many API keys the gateway processes have looked up in their credentials."""
    total = 0.0
    for name, process in stack.processes.items():
        if not name.startswith("gateway"):
            continue
        port = process.ops_port  # type: ignore[attr-defined]
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=15).text
        total += sum(
            metric(text, "ledgerdesk_credential_checks_total", outcome=outcome)
            for outcome in ("accepted", "refused", "unavailable")
        )
    return total


# --- finding 7: the client behind a proxy -----------------------------------------------------


def test_the_access_log_records_the_client_a_trusted_proxy_names_and_no_one_else(edge):
    key = sign_up(edge)["api_key"]
    agents = {name: unique(f"edge-{name}") for name in ("chain", "untrusted", "garbage", "rfc")}
    untrusted = loopback()
    with tap(edge, "gateway.access_logged", AccessLog) as log:
        # The client wrote the leftmost entries itself: only the proxy's own entry counts.
        chain = via_proxy(
            edge,
            "6.6.6.6, 10.0.0.1, 203.0.113.50",
            "GET",
            "/v1/tenant",
            key=key,
            headers={"User-Agent": agents["chain"]},
        )
        assert chain.status_code == 200, chain.text
        spoofing = from_address(
            edge,
            untrusted,
            "GET",
            "/v1/tenant",
            key=key,
            headers={"User-Agent": agents["untrusted"], "X-Forwarded-For": "203.0.113.51"},
        )
        assert spoofing.status_code == 200, spoofing.text
        garbage = via_proxy(
            edge,
            "203.0.113.52, <script>not an address</script>",
            "GET",
            "/v1/tenant",
            key=key,
            headers={"User-Agent": agents["garbage"]},
        )
        assert garbage.status_code == 200, garbage.text
        rfc = edge.call(
            "GET",
            "/v1/tenant",
            key=key,
            headers={"User-Agent": agents["rfc"], "Forwarded": 'for="[2001:db8::9]:4711"'},
        )
        assert rfc.status_code == 200, rfc.text
        events = log.collect(set(agents.values()))

    assert events[agents["chain"]]["payload"]["ip"] == "203.0.113.50"
    assert events[agents["untrusted"]]["payload"]["ip"] == untrusted
    # A hop the walk reaches that is not an address leaves the client unknown: never the proxy,
    # whose bucket the client would then share with everyone the proxy forwards for.
    assert events[agents["garbage"]]["payload"]["ip"] is None
    assert events[agents["rfc"]]["payload"]["ip"] == "2001:db8::9"


# --- finding 6: limits before any work --------------------------------------------------------


def test_each_client_address_has_a_bucket_checked_before_anything_else(edge):
    noisy, quiet = _fresh(), _fresh()
    answers = [via_proxy(edge, noisy, "GET", "/v1/tenant") for _ in range(100)]
    statuses = [a.status_code for a in answers]
    assert statuses[:CLIENT_BURST] == [401] * CLIENT_BURST, statuses
    refused = answers[statuses.index(429)] if 429 in statuses else None
    assert refused is not None, f"a flood of 100 from one address was never refused: {statuses}"
    assert_problem(refused, 429)
    assert int(refused.headers["Retry-After"]) >= 1
    # Refused before the route: an unknown one, or a body never read, is a 429 all the same.
    assert via_proxy(edge, noisy, "GET", "/v1/no-such-route").status_code == 429
    assert via_proxy(edge, noisy, "POST", "/v1/contacts", data=b"{" * 10_000).status_code == 429

    # Another client of the same proxy, and a peer that claims to be the noisy one, are not.
    assert via_proxy(edge, quiet, "GET", "/v1/tenant").status_code == 401
    claims = from_address(edge, loopback(), "GET", "/v1/tenant", headers={"X-Forwarded-For": noisy})
    assert claims.status_code == 401, claims.text

    gateway_metrics = edge.call("GET", "/metrics", key=edge.settings.operator_token).text
    assert metric(gateway_metrics, "ledgerdesk_rate_limited_total", limit="client") >= 1


def test_refused_credentials_from_an_address_stop_costing_a_lookup(edge):
    key = sign_up(edge)["api_key"]
    guesser, neighbour = _fresh(), _fresh()
    for _ in range(FAILURE_BURST):
        wrong = via_proxy(edge, guesser, "GET", "/v1/tenant", key="ldk_" + secrets.token_hex(16))
        assert wrong.status_code == 401, wrong.text

    before = authentications(edge)
    for _ in range(8):
        refused = via_proxy(edge, guesser, "GET", "/v1/tenant", key="ldk_" + secrets.token_hex(16))
        assert_problem(refused, 429)
        assert int(refused.headers["Retry-After"]) >= 1
    # A good key from that address waits too: it cannot be told apart without a lookup.
    assert via_proxy(edge, guesser, "GET", "/v1/tenant", key=key).status_code == 429
    assert before > 0, "the lookups are not counted"
    assert authentications(edge) == before, "a refused address's keys still cost a lookup"

    # Another address is not held back, and the operator token is guarded the same way.
    assert via_proxy(edge, neighbour, "GET", "/v1/tenant", key=key).status_code == 200
    operator_guesser = _fresh()
    statuses = [
        via_proxy(
            edge, operator_guesser, "GET", "/v1/operator/health", key=unique("op")
        ).status_code
        for _ in range(FAILURE_BURST + 2)
    ]
    assert statuses == [401] * FAILURE_BURST + [429, 429]

    gateway_metrics = edge.call("GET", "/metrics", key=edge.settings.operator_token).text
    failed = "ledgerdesk_failed_authentications_total"
    assert metric(gateway_metrics, failed, credential="api_key") >= FAILURE_BURST
    assert metric(gateway_metrics, failed, credential="operator_token") >= FAILURE_BURST
    assert metric(gateway_metrics, "ledgerdesk_rate_limited_total", limit="auth_failure") >= 10


def test_one_address_signs_up_a_few_tenants_not_fifty_a_second(edge):
    version = edge.call("GET", "/v1/policies/current").json()["version"]
    signer = _fresh()
    body = {**SIGNUP, "accept_policy_version": version}
    answers = [via_proxy(edge, signer, "POST", "/v1/signup", json=body) for _ in range(10)]
    statuses = [a.status_code for a in answers]
    burst = Settings.signup_burst
    assert statuses == [201] * burst + [429] * (10 - burst), statuses
    assert int(answers[-1].headers["Retry-After"]) >= 1
    # The refusal comes before the body is read: a malformed one is refused the same.
    assert via_proxy(edge, signer, "POST", "/v1/signup", data=b"{").status_code == 429
    assert via_proxy(edge, _fresh(), "POST", "/v1/signup", json=body).status_code == 201


# --- finding 6: the access log of unauthenticated noise ---------------------------------------


def test_a_flood_of_unauthenticated_requests_adds_a_bounded_number_of_ledger_entries(edge):
    template = "/v1/agents/<string:agent_id>/api-keys/<string:key_id>"
    path = f"/v1/agents/{uuid.uuid4()}/api-keys/{uuid.uuid4()}"
    flood = 150
    with tap(edge, "gateway.#", Tap) as published:
        started = time.time()
        for n in range(flood):
            via_proxy(edge, _fresh() if n % 10 == 0 else "198.18.0.1", "DELETE", path)

        def ours(events: list[dict[str, Any]]) -> tuple[int, int, list[dict[str, Any]]]:
            written = [
                e
                for e in events
                if e["type"] == "access_logged"
                and (e["payload"]["method"], e["payload"]["route"]) == ("DELETE", template)
            ]
            summaries = [e for e in events if e["type"] == "access_summarized"]
            counted = sum(
                row["count"]
                for s in summaries
                for row in s["payload"]["requests"]
                if (row["method"], row["route"]) == ("DELETE", template)
            )
            return len(written), counted, summaries

        published.until(
            lambda events: sum(ours(events)[:2]) == flood,
            what="every request of the flood written or counted",
        )
        # A request is recorded after it is answered, so the last ones may fall in the next
        # interval: the flood ends when the gateway has written or counted all of it.
        ended = time.time()
        written, counted, summaries = ours([e for _, e in published.events])

    intervals = math.floor(ended / LOG_SECONDS) - math.floor(started / LOG_SECONDS) + 1
    assert written <= LOG_LIMIT * intervals, (written, intervals)
    assert written + counted == flood and counted >= flood - LOG_LIMIT * intervals
    for summary in summaries:
        payload = summary["payload"]
        assert summary["tenant_id"] is None and summary["actor_id"] is None
        assert set(payload) == {"started_at", "ended_at", "written", "counted", "requests"}
        assert "198." not in str(payload), "a summary names a client"

    # What the ledger gained over those intervals: a bounded number of entries, not the flood.
    first = math.floor(started / LOG_SECONDS) * LOG_SECONDS
    last = (math.floor(ended / LOG_SECONDS) + 1) * LOG_SECONDS
    summary_ids = [s["event_id"] for s in summaries]

    def ledger() -> int | None:
        [(recorded, accesses)] = rows(
            edge,
            "audit",
            "SELECT count(*) FILTER (WHERE event_id = ANY(%s::uuid[])),"
            " count(*) FILTER (WHERE tenant_id IS NULL AND type = 'access_logged'"
            "   AND at >= to_timestamp(%s) AND at < to_timestamp(%s))"
            " FROM ledger_entries_all",
            summary_ids,
            first,
            last,
        )
        return accesses + recorded if recorded == len(summary_ids) else None

    gained = wait_until(ledger, what="the summaries in the ledger")
    # At most the budget and one summary per interval, however long the flood took.
    assert gained <= (LOG_LIMIT + 1) * intervals, (gained, intervals)
