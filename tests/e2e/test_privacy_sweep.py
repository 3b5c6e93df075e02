"""The whole-store sweep: canaries planted through the gateway in every kind of field, then an
erasure, an access-log expiry and a tenant's destruction; then every database dumped, every
queue read, every log line and exported span searched. What is left of the canaries is what a
legal hold keeps (in billing's invoices, restricted, and reported ``retained``), and nothing
else, anywhere.

Periods are shortened by configuration: a retention day lasts two seconds, the grace a few.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import requests
from kombu import Connection, Exchange, Producer, Queue

from kernel import datamap
from kernel.crypto.blind_index import BlindIndex
from kernel.testing import Infrastructure, wait_until
from services.tickets import search_index
from services.tickets.terms import query_terms
from tests.e2e.conftest import Stack
from tests.e2e.helpers import (
    SourceAddress,
    completed,
    fresh_card,
    issue_invoices,
    ok,
    rows,
    stack_logging_to,
    tickets_blind_index,
)
from tests.support import sweep

TAG = secrets.token_hex(4)
# Loopback answers from any 127/8 address: the canary IP is this client's own source address.
CANARY_IP = "127." + ".".join(str(secrets.randbelow(200) + 20) for _ in range(3))
CANARY_AGENT = f"SweepBrowser/{TAG}"


CARD = fresh_card()
SPACED_CARD = " ".join(CARD[i : i + 4] for i in range(0, 16, 4))


def canary(kind: str) -> str:
    return f"Canary{kind}{TAG}"


PHONES = {who: f"+44 7700 9{secrets.randbelow(100_000):05d}" for who in ("Doomed", "Erased")}


def phone(who: str) -> str:
    """A phone number found nowhere else (a phone field takes only digits and punctuation)."""
    return PHONES[who]


def canary_client(stack: Stack) -> Any:
    """``call`` as ``Stack.call``, but from the canary IP with the canary user agent."""
    session = requests.Session()
    session.mount("http://", SourceAddress(CANARY_IP))

    def call(method: str, path: str, key: str | None = None, **kwargs: Any) -> requests.Response:
        headers = {"User-Agent": CANARY_AGENT, **kwargs.pop("headers", {})}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        return session.request(method, stack.url + path, headers=headers, timeout=15, **kwargs)

    return call


@pytest.fixture(scope="module")
def swept(infrastructure: Infrastructure, tmp_path_factory) -> Iterator[tuple[Stack, Path]]:
    log = tmp_path_factory.mktemp("sweep-logs") / "services.log"
    with stack_logging_to(
        infrastructure,
        log,
        LEDGERDESK_GRACE_DAYS="0.0001",
        LEDGERDESK_SCHEDULE_SECONDS="1",
        LEDGERDESK_PRIVACY_RETRY_SECONDS="1",
        LEDGERDESK_DAY_SECONDS="2",
        LEDGERDESK_TRACES="console",
    ) as stack:
        yield stack, log


def plant_people(call: Any, key: str, who: str) -> dict[str, Any]:
    """A contact with canaries in every field, their consent, a ticket with a message, and the
    card number in the ticket's text (redacted there, refused everywhere else)."""
    contact = ok(
        call(
            "POST",
            "/v1/contacts",
            key=key,
            headers={"Idempotency-Key": canary(f"{who}Idem")},
            json={
                "name": canary(f"{who}Name"),
                "email": f"{canary(who).lower()}@mail.example",
                "phone": phone(who),
            },
        ),
        201,
    )
    ok(
        call(
            "PUT",
            f"/v1/contacts/{contact['id']}/consent",
            key=key,
            json={"marketing": True, "source": canary(f"{who}Source")},
        )
    )
    ticket = ok(
        call(
            "POST",
            "/v1/tickets",
            key=key,
            headers={"Idempotency-Key": canary(f"{who}TicketIdem")},
            json={
                "subject": canary(f"{who}Subject"),
                "body": f"{canary(who + 'Body')} my card is {SPACED_CARD}",
                "requester_id": contact["id"],
                "tags": [canary(f"{who}Tag").lower()],
            },
        ),
        201,
    )
    # A file on the message: its name and its bytes are canaries (the bytes sealed in chunks).
    attachment = ok(
        call(
            "POST",
            f"/v1/tickets/{ticket['id']}/attachments",
            key=key,
            params={"filename": f"{canary(f'{who}FileName')}.txt"},
            data=f"{canary(f'{who}FileBytes')}\n".encode() * 20_000,  # two chunks and more
        ),
        201,
    )
    ok(
        call(
            "POST",
            f"/v1/tickets/{ticket['id']}/messages",
            key=key,
            json={
                "body": canary(f"{who}Message"),
                "internal": True,
                "attachment_ids": [attachment["id"]],
            },
        ),
        201,
    )
    # Its download is the file's bytes, as a positive control of what the sweep looks for.
    got = call("GET", f"/v1/tickets/{ticket['id']}/attachments/{attachment['id']}", key=key)
    assert got.status_code == 200 and canary(f"{who}FileBytes").encode() in got.content
    current = call("GET", f"/v1/tickets/{ticket['id']}", key=key)
    ok(
        call(
            "PATCH",
            f"/v1/tickets/{ticket['id']}",
            key=key,
            headers={"If-Match": current.headers["ETag"]},
            json={"status": "open"},
        )
    )
    for method, path in (("GET", "/v1/contacts"), ("GET", "/v1/tickets")):
        ok(call(method, path, key=key))
    # A search: its query (a word of the ticket and one of its own) is kept nowhere, and the
    # ticket's words are in the index only as keyed hashes (``index_holds``).
    query = f"{canary(f'{who}Subject')} {canary(f'{who}Query')}"
    found = ok(call("GET", "/v1/search", key=key, params={"q": query}))
    assert [item["id"] for item in found["items"]] == [ticket["id"]]
    return {"contact": contact, "ticket": ticket, "attachment": attachment}


# The words of each tenant's ticket as the search index keeps them (hashed under the tenant's
# key): the subject, the body and the internal note, each by its first 16 letters.
INDEXED = ("Subject", "Body", "Message")


def index_holds(stack: Stack, blind: BlindIndex, tenant: str, who: str) -> int | None:
    """How many of ``who``'s indexed words the search index holds as digests under the tenant's
    key; None if no such digest can be computed any more (the tenant's key is gone)."""
    terms = [query_terms(canary(f"{who}{kind}"))[0] for kind in INDEXED]
    digests = search_index.digests(blind, tenant, terms, create=False)
    if digests is None:
        return None
    found = rows(
        stack,
        "tickets",
        "SELECT count(DISTINCT digest) FROM search_terms WHERE digest = ANY(%s)",
        digests,
    )
    return found[0][0]


def refuse_the_card_everywhere(stack: Stack, key: str, contact_id: str) -> None:
    """Every free-text field refuses a card number (422), wherever it is loaded."""
    attempts = [
        ("POST", "/v1/contacts", {"name": SPACED_CARD, "email": "x@mail.example"}),
        ("POST", "/v1/contacts", {"name": "x", "email": "x@mail.example", "phone": SPACED_CARD}),
        ("PUT", f"/v1/contacts/{contact_id}/consent", {"marketing": True, "source": SPACED_CARD}),
        ("POST", "/v1/agents", {"name": SPACED_CARD, "email": "y@mail.example", "role": "agent"}),
        (
            "PUT",
            "/v1/billing/address",
            {"address": {"line1": SPACED_CARD, "city": "c", "postcode": "p", "country": "GB"}},
        ),
        (
            "POST",
            "/v1/privacy/requests",
            {"type": "access", "subject": {"contact_id": contact_id}, "identity_check": CARD},
        ),
    ]
    for method, path, body in attempts:
        response = stack.call(method, path, key=key, json=body)
        assert response.status_code == 422, (path, response.text)
        assert CARD not in response.text and SPACED_CARD not in response.text
    refused = stack.call("GET", f"/v1/tickets?status={CARD}", key=key)
    assert refused.status_code == 422 and CARD not in refused.text
    idempotent = stack.call(
        "POST",
        "/v1/contacts",
        key=key,
        headers={"Idempotency-Key": CARD},
        json={"name": "Nobody", "email": "nobody@mail.example"},
    )
    assert idempotent.status_code == 422
    # A user agent is free text too: kept in the access log, the card cut to its last four.
    stack.call("GET", "/v1/tenant", key=key, headers={"User-Agent": f"agent {SPACED_CARD}"})


def spans(text: str) -> list[dict[str, Any]]:
    """The spans the console exporter wrote among the log lines (indented JSON objects)."""
    decoder = json.JSONDecoder()
    found = []
    for match in re.finditer(r'^\{\n\s+"name":', text, re.MULTILINE):
        with contextlib.suppress(ValueError):
            found.append(decoder.raw_decode(text, match.start())[0])
    return found


def stored(stack: Stack, log: Path) -> Iterator:
    yield from sweep.database_texts(stack.settings)
    yield from sweep.file_texts([log])


def everything(stack: Stack, infrastructure: Infrastructure, log: Path) -> Iterator:
    # Queues are read once, at the end: each read puts messages back, and a quorum queue counts
    # that as a delivery towards its limit.
    yield from stored(stack, log)
    yield from sweep.queue_texts(infrastructure, stack.settings)


def test_erasure_expiry_and_destruction_leave_no_canary_anywhere(swept, infrastructure):
    stack, log = swept
    call = canary_client(stack)

    # Tenant A: canaries everywhere, an invoice (held by law), then cancelled and destroyed.
    doomed = stack.sign_up(
        company=canary("Company"),
        admin={"name": canary("AdminName"), "email": f"{canary('admin').lower()}@mail.example"},
    )
    key_a, tenant_a = doomed["api_key"], doomed["tenant"]["id"]
    wait_until(
        lambda: stack.call("GET", "/v1/billing/subscription", key=key_a).status_code == 200,
        what="billing to open the account",
    )
    ok(
        call(
            "PUT",
            "/v1/billing/address",
            key=key_a,
            json={
                "address": {
                    "line1": canary("Street"),
                    "city": canary("City"),
                    "postcode": canary("Post"),
                    "country": "GB",
                }
            },
        )
    )
    ok(
        call(
            "POST",
            "/v1/billing/payment-methods",
            key=key_a,
            json={"processor_token": "tok_sandbox_visa"},
        ),
        201,
    )
    plant_people(call, key_a, "Doomed")
    # A breach notice to A's admins: the operator's text is A's copy, ended by its destruction.
    incident = {
        "tenant_ids": [tenant_a],
        "categories": ["identity"],
        "description": canary("DoomedIncident"),
    }
    token = stack.settings.operator_token
    ok(stack.call("POST", "/v1/operator/incidents", key=token, json=incident), 201)
    assert issue_invoices(stack) >= 1

    # Tenant B lives on; its contact C is erased, its access log lasts one (two-second) day.
    living = stack.sign_up()
    key_b, tenant_b = living["api_key"], living["tenant"]["id"]
    second = ok(
        stack.call(
            "POST",
            "/v1/agents",
            key=key_b,
            json={"name": "Second Admin", "email": "second@mail.example", "role": "admin"},
        ),
        201,
    )
    second_key = stack.claim_key(second["api_key"])
    planted = plant_people(call, key_b, "Erased")
    contact_id = planted["contact"]["id"]

    # Positive controls: the sweep finds what is there before anything is forgotten, and the
    # ledger shows B's requests with the canary address and agent (under the default period).
    before = sweep.find(
        [
            canary("ErasedName"),
            canary("ErasedSource"),
            canary("ErasedIdem"),
            canary("DoomedName"),
            canary("DoomedIncident"),
            phone("Erased"),
        ],
        stored(stack, log),
    )
    assert len(before) == 6, before
    # ...and the search index holds both tenants' words, as keyed hashes.
    with tickets_blind_index(stack) as blind:
        assert index_holds(stack, blind, tenant_a, "Doomed") == len(INDEXED)
        assert index_holds(stack, blind, tenant_b, "Erased") == len(INDEXED)
    requested_by = "SELECT count(*) FROM search_terms WHERE requester_id = %s"
    assert rows(stack, "tickets", requested_by, contact_id)[0][0] > 0
    accesses = ok(stack.call("GET", "/v1/audit/entries?type=access_logged&limit=200", key=key_b))
    seen = {(e["payload"]["ip"], e["payload"]["user_agent"]) for e in accesses["items"]}
    assert (CANARY_IP, CANARY_AGENT) in seen, seen
    # From now on B's access log lasts one (two-second) day.
    ok(stack.call("PUT", "/v1/retention/policies/access_log", key=key_b, json={"days": 1}))
    refuse_the_card_everywhere(stack, key_b, contact_id)
    ok(
        stack.call(
            "PUT",
            "/v1/privacy/approval-policy",
            key=key_b,
            json={"requires_approval": ["erasure"]},
        )
    )
    filed = ok(
        stack.call(
            "POST",
            "/v1/privacy/requests",
            key=key_b,
            json={
                "type": "erasure",
                "subject": {"contact_id": contact_id},
                "identity_check": canary("IdentityCheck"),
            },
        ),
        202,
    )
    ok(
        stack.call(
            "POST",
            f"/v1/privacy/requests/{filed['id']}/approve",
            key=second_key,
            json={"reason": canary("Reason")},
        )
    )
    assert completed(stack, key_b, filed["id"])["status"] == "completed"

    # A's grace runs out: destroyed everywhere, the held invoices aside.
    assert stack.call("DELETE", "/v1/tenant", key=key_a).status_code == 202
    destruction = wait_until(
        lambda: _destruction(stack, tenant_a), timeout=90, what="the tenant's destruction"
    )
    assert destruction["services"]["billing"] == "retained", destruction

    held = {("db", stack.settings.database_name("billing"), "invoices")}
    gone = [
        canary(kind)
        for kind in (
            "ErasedName",
            "ErasedSource",
            "ErasedSubject",
            "ErasedBody",
            "ErasedMessage",
            "ErasedFileName",
            "ErasedFileBytes",
            "ErasedQuery",
            "ErasedIdem",
            "ErasedTicketIdem",
            "DoomedName",
            "DoomedSource",
            "DoomedSubject",
            "DoomedBody",
            "DoomedMessage",
            "DoomedFileName",
            "DoomedFileBytes",
            "DoomedQuery",
            "DoomedIdem",
            "DoomedTicketIdem",
            "DoomedIncident",
        )
    ] + [
        f"{canary('Erased').lower()}@mail.example",
        f"{canary('Doomed').lower()}@mail.example",
        canary("ErasedTag").lower(),
        canary("DoomedTag").lower(),
        # What the tokeniser would make of the words of the tickets and the queries.
        *(
            canary(f"{who}{kind}").lower()
            for who in ("Erased", "Doomed")
            for kind in ("Query", *INDEXED)
        ),
        canary("IdentityCheck"),
        canary("Reason"),
        *PHONES.values(),
        CANARY_IP,
        CANARY_AGENT,
        CARD,
    ]
    kept_under_hold = [
        canary("Company"),
        canary("AdminName"),
        f"{canary('admin').lower()}@mail.example",
        canary("Street"),
        canary("City"),
        canary("Post"),
    ]

    def leaks(texts: Iterator) -> dict[str, set]:
        found = sweep.find(gone + kept_under_hold, texts)
        return {
            c: places
            for c, places in found.items()
            if c not in kept_under_hold or not places <= held
        }

    # The access log of B's day ends within a day of its period; everything else is done.
    wait_until(
        lambda: not leaks(stored(stack, log)), timeout=60, what="no canary but under the hold"
    )
    assert leaks(everything(stack, infrastructure, log)) == {}
    # The search index: nothing of the erased requester, nothing of the destroyed tenant, and
    # no key left that could hash a word of it again.
    with tickets_blind_index(stack) as blind:
        assert index_holds(stack, blind, tenant_b, "Erased") == 0
        assert index_holds(stack, blind, tenant_a, "Doomed") is None
    assert rows(stack, "tickets", requested_by, contact_id)[0][0] == 0
    # No attachment of the erased requester or the destroyed tenant, nor a chunk of one; the
    # erased requester's file is not found (its rows and key are gone).
    assert rows(stack, "tickets", "SELECT count(*) FROM attachments")[0][0] == 0
    assert rows(stack, "tickets", "SELECT count(*) FROM attachment_chunks")[0][0] == 0
    erased_file = planted["attachment"]["id"]
    gone_file = call(
        "GET", f"/v1/tickets/{planted['ticket']['id']}/attachments/{erased_file}", key=key_b
    )
    assert gone_file.status_code == 404
    of_tenant = "SELECT count(*) FROM search_terms WHERE tenant_id = %s"
    assert rows(stack, "tickets", of_tenant, tenant_a)[0][0] == 0
    assert rows(stack, "tickets", of_tenant, tenant_b)[0][0] == 0  # B had the one ticket

    # The sweep saw the stores it claims to: the held invoice is found where the law keeps it.
    assert sweep.find([canary("Company")], sweep.database_texts(stack.settings)) == {
        canary("Company"): held
    }

    # Every exported span carries declared attributes only.
    exported = spans(log.read_text(errors="replace"))
    assert exported, "the console exporter wrote spans"
    declared = {f.name for f in datamap.SPAN_ATTRIBUTES}
    seen = {
        key
        for span in exported
        for key in [*span.get("attributes", {}), *span.get("resource", {}).get("attributes", {})]
    }
    assert seen <= declared, seen - declared


def _destruction(stack: Stack, tenant_id: str) -> dict[str, Any] | None:
    found = rows(
        stack,
        "retention",
        "SELECT r.status, s.service, s.status FROM requests r"
        " JOIN request_services s ON s.request_id = r.id"
        " WHERE r.tenant_id = %s AND r.type = 'destruction'",
        tenant_id,
    )
    if not found or found[0][0] != "completed":
        return None
    return {"status": found[0][0], "services": {service: status for _, service, status in found}}


def test_the_sweep_finds_a_copy_planted_in_each_kind_of_store(swept, infrastructure, tmp_path):
    stack, _ = swept
    planted = canary("Planted")
    conn = psycopg2.connect(stack.settings.database_dsn("accounts"))
    conn.autocommit = True
    queue = Queue("sweep.probe", exchange=Exchange("", type="direct"), routing_key="sweep.probe")
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE sweep_probe (note bytea)")
            cur.execute("INSERT INTO sweep_probe VALUES (%s)", (planted.encode(),))
        with Connection(stack.settings.amqp_uri) as broker:
            queue(broker.channel()).declare()
            Producer(broker.channel()).publish(
                {"note": planted}, routing_key="sweep.probe", serializer="json"
            )
        log = tmp_path / "planted.log"
        log.write_text(f'{{"message": "{planted}"}}\n')
        wait_until(
            lambda: sweep.find([planted], sweep.queue_texts(infrastructure, stack.settings)),
            what="the probe message to be queued",
        )
        found = sweep.find([planted], everything(stack, infrastructure, log))
        assert found == {
            planted: {
                ("db", stack.settings.database_name("accounts"), "sweep_probe"),
                ("queue", "sweep.probe", ""),
                ("file", "planted.log", ""),
            }
        }
        # A card number is found however its digits are spaced.
        assert sweep.find([CARD], [(("file", "x", ""), f"card {SPACED_CARD}.")]) == {
            CARD: {("file", "x", "")}
        }
    finally:
        with conn.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS sweep_probe")
        conn.close()
        with Connection(stack.settings.amqp_uri) as broker:
            queue(broker.channel()).delete()
        vhost = urllib.parse.quote(stack.settings.database_prefix, safe="")
        with contextlib.suppress(requests.RequestException):
            infrastructure.management("DELETE", f"/api/queues/{vhost}/sweep.probe")
