"""Webhook endpoints and deliveries against real PostgreSQL and a real HTTP receiver: the
fan-out, the claim, the signature, retries and their end, the address checks at delivery time
(DNS rebinding: the resolver stands in for DNS), redirects, timeouts, deletion and destruction."""

from __future__ import annotations

import datetime as dt
import json
import ssl
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client import REGISTRY

from gateway.idempotency import MIGRATIONS
from gateway.webhooks import addresses, sender, signing
from gateway.webhooks.dispatcher import Dispatcher, Schedule
from gateway.webhooks.store import Webhooks, forget_tenant
from kernel import db as kdb
from kernel.config import Settings
from kernel.crypto.keystore import Keystore
from kernel.envelope import Envelope, new_envelope
from kernel.errors import NotFound, ValidationFailed
from kernel.stores import prepare_databases
from kernel.testing import wait_until
from tests.support.webhook_receiver import Receiver, Script, receiving

PUBLIC = "93.184.215.14"
LOOPBACK_ALLOWED = addresses.Policy(allow_http=True, allow_private=True)
HTTP_ONLY = addresses.Policy(allow_http=True)
QUICK = Schedule(dt.timedelta(seconds=0.05), dt.timedelta(hours=1))


def resolving(*answers: str):
    def resolve(host: str, port: int) -> list[str]:
        return list(answers)

    return resolve


@pytest.fixture
def database(world: Settings) -> Iterator[kdb.Database]:
    prepare_databases(world, "gateway", MIGRATIONS)
    database = kdb.Database(world.database_dsn("gateway"))
    yield database
    database.close()


@pytest.fixture
def keystore(world: Settings, database: kdb.Database) -> Iterator[Keystore]:
    keys = kdb.Database(world.database_dsn("gateway", "keys"))
    yield Keystore(keys, world.master_keys, cache_seconds=world.key_cache_seconds)
    keys.close()


@pytest.fixture
def webhooks(database: kdb.Database, keystore: Keystore) -> Webhooks:
    return Webhooks(database, keystore, LOOPBACK_ALLOWED)


def dispatcher(
    database: kdb.Database,
    keystore: Keystore,
    policy: addresses.Policy = LOOPBACK_ALLOWED,
    schedule: Schedule = QUICK,
    timeout: float = 5.0,
    **kwargs,
) -> Dispatcher:
    return Dispatcher(database, keystore, policy, schedule, timeout, **kwargs)


def ticket_created(tenant: str, **payload) -> Envelope:
    return new_envelope(
        type="ticket_created",
        schema_version=1,
        source="tickets",
        stream_id=f"ticket-{uuid.uuid4()}",
        stream_version=1,
        tenant_id=uuid.UUID(tenant),
        actor_id=None,
        payload={
            "ticket_id": str(uuid.uuid4()),
            "tenant_id": tenant,
            "requester_id": str(uuid.uuid4()),
            "priority": "normal",
            **payload,
        },
    )


def register(webhooks: Webhooks, receiver: Receiver, tenant: str | None = None, **kwargs):
    tenant = tenant or str(uuid.uuid4())
    events = kwargs.pop("events", ["ticket.created"])
    url = kwargs.pop("url", None) or receiver.url()
    return tenant, webhooks.register(tenant, str(uuid.uuid4()), url, events)


def log_of(webhooks: Webhooks, tenant: str, endpoint: dict) -> list[dict]:
    return webhooks.deliveries(tenant, endpoint["id"], 50, None)["items"]


def due_now(database: kdb.Database) -> None:
    """What waits for its next attempt is due now (as time passing would make it)."""
    with database.transaction() as cur:
        cur.execute(
            "UPDATE webhook_deliveries SET next_attempt_at = now() WHERE status = 'pending'"
        )


# --- registration -----------------------------------------------------------------------------


def test_the_url_and_secret_are_stored_only_under_the_tenants_key(webhooks, database):
    with receiving() as receiver:
        tenant, created = register(webhooks, receiver, url=receiver.url("/in?token=q-s3cret"))
    assert created["secret"].startswith("whsec_")
    shown = webhooks.endpoint(tenant, created["id"])
    assert shown["url"] == receiver.url("/in?token=q-s3cret") and "secret" not in shown
    with database.read() as cur:
        cur.execute("SELECT url_sealed, secret_sealed FROM webhook_endpoints")
        url_sealed, secret_sealed = map(bytes, cur.fetchone())
    assert b"q-s3cret" not in url_sealed and b"127.0.0.1" not in url_sealed
    assert created["secret"].encode() not in secret_sealed


def test_registration_refuses_what_the_policy_refuses(database, keystore):
    strict = Webhooks(database, keystore, addresses.Policy(), resolving("10.0.0.8"))
    tenant = str(uuid.uuid4())
    for url, reason in (
        ("http://hooks.example.com/", "https://"),
        ("https://hooks.example.com/", "private address"),
        ("https://127.0.0.1/", "loopback"),
    ):
        with pytest.raises(ValidationFailed) as refused:
            strict.register(tenant, str(uuid.uuid4()), url, ["ticket.created"])
        assert reason in refused.value.errors["url"][0]
    with pytest.raises(ValidationFailed) as refused:
        Webhooks(database, keystore, addresses.Policy(), resolving(PUBLIC)).register(
            tenant, str(uuid.uuid4()), "https://hooks.example.com/", ["ticket.nope"]
        )
    assert "events" in refused.value.errors
    with database.read() as cur:
        cur.execute("SELECT count(*) FROM webhook_endpoints")
        assert cur.fetchone()[0] == 0


def test_another_tenants_endpoint_is_not_found(webhooks):
    with receiving() as receiver:
        _, created = register(webhooks, receiver)
    other = str(uuid.uuid4())
    for call in (
        lambda: webhooks.endpoint(other, created["id"]),
        lambda: webhooks.delete(other, created["id"]),
        lambda: webhooks.deliveries(other, created["id"], 10, None),
        lambda: webhooks.endpoint(other, "not-a-uuid"),
    ):
        with pytest.raises(NotFound):
            call()


# --- fan-out and delivery ---------------------------------------------------------------------


def test_an_event_is_delivered_signed_once_per_endpoint_and_only_to_its_tenant(
    webhooks, database, keystore
):
    with receiving() as receiver, receiving() as elsewhere:
        tenant, endpoint = register(webhooks, receiver)
        register(webhooks, elsewhere)  # another tenant's
        _, unsubscribed = register(webhooks, elsewhere, tenant, events=["ticket.assigned"])
        event = ticket_created(tenant, subject="Jane's refund", body="jane@example.com")

        assert webhooks.fan_out(event) == 1
        assert webhooks.fan_out(event) == 0  # redelivered: nothing owed twice
        assert dispatcher(database, keystore).run_once() == 1

        (got,) = receiver.received
        assert elsewhere.received == []
    assert got.path == "/hook"
    assert got.headers[signing.EVENT_ID_HEADER] == str(event.event_id)
    assert got.headers[signing.EVENT_TYPE_HEADER] == "ticket.created"
    assert got.headers[signing.ATTEMPT_HEADER] == "1"
    assert signing.verify(endpoint["secret"], got.headers[signing.SIGNATURE_HEADER], got.body)
    body = json.loads(got.body)
    assert body["id"] == str(event.event_id) and body["tenant_id"] == tenant
    assert body["data"] == {
        "ticket_id": event.payload["ticket_id"],
        "requester_id": event.payload["requester_id"],
        "priority": "normal",
        "status": "new",
    }
    assert b"jane" not in got.body.lower()
    (logged,) = log_of(webhooks, tenant, endpoint)
    assert logged["status"] == "delivered" and logged["status_code"] == 200
    assert [a["outcome"] for a in logged["history"]] == ["delivered"]
    assert log_of(webhooks, tenant, unsubscribed) == []


def attempts_counted(outcome: str) -> float:
    return REGISTRY.get_sample_value("ledgerdesk_webhook_attempts_total", {"outcome": outcome}) or 0


def test_a_failed_attempt_is_retried_with_a_new_signature_until_it_succeeds(
    webhooks, database, keystore
):
    errors_before, delivered_before = attempts_counted("http_error"), attempts_counted("delivered")
    with receiving(Script(statuses=[500, 503])) as receiver:
        tenant, endpoint = register(webhooks, receiver)
        webhooks.fan_out(ticket_created(tenant))
        sending = dispatcher(database, keystore)
        assert sending.run_once() == 1
        assert sending.run_once() == 0  # not due yet
        (pending,) = log_of(webhooks, tenant, endpoint)
        assert (pending["status"], pending["status_code"], pending["outcome"]) == (
            "pending",
            500,
            "http_error",
        )
        for _ in range(2):
            due_now(database)
            assert sending.run_once() == 1
        attempts = receiver.received
    assert [r.headers[signing.ATTEMPT_HEADER] for r in attempts] == ["1", "2", "3"]
    assert len({r.headers[signing.EVENT_ID_HEADER] for r in attempts}) == 1
    assert len({r.body for r in attempts}) == 1  # the same bytes, signed anew each time
    for got in attempts:
        assert signing.verify(endpoint["secret"], got.headers[signing.SIGNATURE_HEADER], got.body)
    (done,) = log_of(webhooks, tenant, endpoint)
    assert done["status"] == "delivered" and done["attempts"] == 3
    assert [(a["attempt"], a["status_code"]) for a in done["history"]] == [
        (1, 500),
        (2, 503),
        (3, 200),
    ]
    assert attempts_counted("http_error") - errors_before == 2
    assert attempts_counted("delivered") - delivered_before == 1


def test_when_the_retry_window_closes_the_delivery_is_failed_and_stays_in_the_log(
    webhooks, database, keystore
):
    window = Schedule(dt.timedelta(seconds=0.05), dt.timedelta(seconds=0.3))
    with receiving(Script(statuses=[500] * 100)) as receiver:
        tenant, endpoint = register(webhooks, receiver)
        webhooks.fan_out(ticket_created(tenant))
        sending = dispatcher(database, keystore, schedule=window)

        def finished() -> dict | None:
            sending.run_once()
            (delivery,) = log_of(webhooks, tenant, endpoint)
            return delivery if delivery["status"] != "pending" else None

        failed = wait_until(finished, timeout=10, what="the delivery to fail")
        sent = len(receiver.received)
    assert failed["status"] == "failed" and failed["next_attempt_at"] is None
    assert failed["finished_at"] is not None and sent == failed["attempts"] >= 2
    assert dispatcher(database, keystore, schedule=window).run_once() == 0


def test_a_host_that_resolves_to_loopback_later_is_not_delivered_to(database, keystore):
    """DNS rebinding: public at registration, loopback when the delivery is due."""
    with receiving() as receiver:
        url = f"http://hooks.example.test:{receiver.port}/hook"
        at_registration = Webhooks(database, keystore, HTTP_ONLY, resolving(PUBLIC))
        tenant, endpoint = register(at_registration, receiver, url=url)
        at_registration.fan_out(ticket_created(tenant))

        rebound = dispatcher(database, keystore, HTTP_ONLY, resolver=resolving("127.0.0.1"))
        assert rebound.run_once() == 1
        assert receiver.received == []
    (refused,) = log_of(at_registration, tenant, endpoint)
    assert (refused["status"], refused["outcome"], refused["status_code"]) == (
        "pending",
        "address_refused",
        None,
    )


def test_the_connection_goes_to_the_address_checked_never_a_second_resolution(
    webhooks, database, keystore
):
    """The name resolves only through the resolver the check used: the system's resolver does
    not know it, so a second resolution could not have connected."""
    with receiving() as receiver:
        url = f"http://hooks.example.test:{receiver.port}/hook"
        tenant, _ = register(
            Webhooks(database, keystore, LOOPBACK_ALLOWED, resolving("127.0.0.1")),
            receiver,
            url=url,
        )
        webhooks.fan_out(ticket_created(tenant))
        assert dispatcher(database, keystore, resolver=resolving("127.0.0.1")).run_once() == 1
        (got,) = receiver.received
    assert got.headers["Host"] == f"hooks.example.test:{receiver.port}"


def test_a_redirect_is_not_followed(webhooks, database, keystore):
    with receiving() as inside:
        script = Script(statuses=[302], location=inside.url("/metadata"))
        with receiving(script) as receiver:
            tenant, endpoint = register(webhooks, receiver)
            webhooks.fan_out(ticket_created(tenant))
            dispatcher(database, keystore).run_once()
            assert len(receiver.received) == 1
        assert inside.received == []
    (logged,) = log_of(webhooks, tenant, endpoint)
    assert (logged["outcome"], logged["status_code"], logged["status"]) == (
        "redirect",
        302,
        "pending",
    )


def test_a_slow_receiver_is_cut_off_at_the_timeout(webhooks, database, keystore):
    with receiving(Script(delay=3)) as receiver:
        tenant, endpoint = register(webhooks, receiver)
        webhooks.fan_out(ticket_created(tenant))
        started = time.monotonic()
        dispatcher(database, keystore, timeout=0.5).run_once()
        took = time.monotonic() - started
    assert took < 2.5
    (logged,) = log_of(webhooks, tenant, endpoint)
    assert logged["outcome"] == "timeout" and logged["status"] == "pending"


def test_a_claim_whose_sender_died_is_due_again_after_its_lease(webhooks, database, keystore):
    with receiving() as receiver:
        tenant, endpoint = register(webhooks, receiver)
        webhooks.fan_out(ticket_created(tenant))
        dead = dispatcher(database, keystore)
        dead.lease = dt.timedelta(seconds=0.3)
        (claimed,) = dead.claim(10)  # ... and the process dies before sending
        survivor = dispatcher(database, keystore)
        assert survivor.claim(10) == []  # claimed: no one else sends it meanwhile
        time.sleep(0.4)
        assert survivor.run_once() == 1
        (got,) = receiver.received
        # The dead attempt's late record changes nothing: the claim is not its any more.
        late = sender.Result(sender.HTTP_ERROR, 500)
        now = dt.datetime.now(dt.UTC)
        assert dead.record(claimed, late, now, now) is None
    assert got.headers[signing.ATTEMPT_HEADER] == "2"
    (logged,) = log_of(webhooks, tenant, endpoint)
    assert logged["status"] == "delivered" and [a["attempt"] for a in logged["history"]] == [2]


def test_a_delivery_never_recorded_is_not_claimed_past_its_window(webhooks, database, keystore):
    with receiving() as receiver:
        tenant, endpoint = register(webhooks, receiver)
        webhooks.fan_out(ticket_created(tenant))
        short = Schedule(dt.timedelta(seconds=0.05), dt.timedelta(seconds=0.2))
        dying = dispatcher(database, keystore, schedule=short)
        dying.lease = dt.timedelta(seconds=0.1)
        assert len(dying.claim(10)) == 1  # and the sender dies, again and again
        time.sleep(0.2)
        assert len(dying.claim(10)) == 1  # within the window and a lease: tried again
        time.sleep(0.4)
        assert dying.claim(10) == []
        assert receiver.received == []
    (failed,) = log_of(webhooks, tenant, endpoint)
    assert failed["status"] == "failed" and failed["attempts"] == 2 and failed["history"] == []


def test_a_url_with_non_ascii_characters_is_sent_percent_encoded(webhooks, database, keystore):
    with receiving() as receiver:
        tenant, _ = register(webhooks, receiver, url=receiver.url("/hooks/café?q=ü&x=%41"))
        webhooks.fan_out(ticket_created(tenant))
        dispatcher(database, keystore).run_once()
        (got,) = receiver.received
    assert got.path == "/hooks/caf%C3%A9?q=%C3%BC&x=%41"


def test_concurrent_dispatchers_never_claim_the_same_delivery(webhooks, database, keystore):
    with receiving() as receiver:
        tenant, _ = register(webhooks, receiver)
        for _ in range(6):
            webhooks.fan_out(ticket_created(tenant))
        first, second = dispatcher(database, keystore), dispatcher(database, keystore)
        conn = database._checkout()
        try:
            with conn.cursor() as cur:  # a claim in progress elsewhere holds three rows
                cur.execute(
                    "SELECT id FROM webhook_deliveries ORDER BY id LIMIT 3 FOR UPDATE SKIP LOCKED"
                )
                held = {row[0] for row in cur.fetchall()}
                claimed = {c.delivery_id for c in first.claim(10)}
            conn.rollback()
        finally:
            database._checkin(conn, broken=False)
        assert len(claimed) == 3 and not claimed & held
        assert {c.delivery_id for c in second.claim(10)} == held


def test_deleting_the_endpoint_stops_its_deliveries(webhooks, database, keystore):
    with receiving(Script(statuses=[500])) as receiver:
        tenant, endpoint = register(webhooks, receiver)
        webhooks.fan_out(ticket_created(tenant))
        sending = dispatcher(database, keystore)
        sending.run_once()
        (claimed,) = (due_now(database), sending.claim(10))[1]
        webhooks.delete(tenant, endpoint["id"])
        now = dt.datetime.now(dt.UTC)
        assert sending.record(claimed, sender.Result(sender.DELIVERED, 200), now, now) is None
        webhooks.fan_out(ticket_created(tenant))
        due_now(database)
        assert sending.run_once() == 0
        assert len(receiver.received) == 1
    with database.read() as cur:
        cur.execute(
            "SELECT (SELECT count(*) FROM webhook_deliveries), count(*) FROM webhook_attempts"
        )
        assert cur.fetchone() == (0, 0)


def test_a_destroyed_tenants_rows_go_and_nothing_of_it_is_sent(webhooks, database, keystore):
    with receiving() as receiver:
        tenant, _ = register(webhooks, receiver)
        kept_tenant, kept = register(webhooks, receiver)
        webhooks.fan_out(ticket_created(tenant))
        webhooks.fan_out(ticket_created(kept_tenant))
        # The key first, as the gateway's destruction does: a claim made meanwhile cannot sign.
        keystore.shred_tenant(tenant)
        sending = dispatcher(database, keystore)
        assert sending.run_once() == 2
        assert [json.loads(r.body)["tenant_id"] for r in receiver.received] == [kept_tenant]
        with database.transaction() as cur:
            assert forget_tenant(cur, tenant) == 1
    with database.read() as cur:
        cur.execute("SELECT DISTINCT tenant_id::text FROM webhook_endpoints")
        assert cur.fetchall() == [(kept_tenant,)]
        cur.execute("SELECT DISTINCT tenant_id::text FROM webhook_deliveries")
        assert cur.fetchall() == [(kept_tenant,)]
    assert log_of(webhooks, kept_tenant, kept)[0]["status"] == "delivered"


def test_a_secret_unreadable_ends_the_delivery_as_failed(webhooks, database, keystore):
    with receiving() as receiver:
        tenant, endpoint = register(webhooks, receiver)
        webhooks.fan_out(ticket_created(tenant))
        keystore.shred_tenant(tenant)
        dispatcher(database, keystore).run_once()
        assert receiver.received == []
    with database.read() as cur:
        cur.execute(
            "SELECT d.status, a.outcome FROM webhook_deliveries d JOIN webhook_attempts a"
            " ON a.delivery_id = d.id"
        )
        assert cur.fetchall() == [("failed", "secret_gone")]


def test_finished_deliveries_leave_the_log_after_its_period(database, keystore):
    quick_log = Webhooks(database, keystore, LOOPBACK_ALLOWED, log_period=dt.timedelta(seconds=1))
    with receiving(Script(statuses=[200, 500])) as receiver:
        tenant, endpoint = register(quick_log, receiver)
        quick_log.fan_out(ticket_created(tenant))  # delivered
        quick_log.fan_out(ticket_created(tenant))  # pending after a 500
        dispatcher(
            database, keystore, schedule=Schedule(dt.timedelta(hours=1), dt.timedelta(hours=2))
        ).run_once()
    assert sorted(d["status"] for d in log_of(quick_log, tenant, endpoint)) == [
        "delivered",
        "pending",
    ]
    assert quick_log.purge_expired() == 0  # finished, but not long enough ago
    time.sleep(1.1)
    assert quick_log.purge_expired() == 1
    (left,) = log_of(quick_log, tenant, endpoint)
    assert left["status"] == "pending"
    with database.read() as cur:
        cur.execute("SELECT count(*) FROM webhook_attempts")
        assert cur.fetchone()[0] == 1


# --- a rotated secret, a ping -----------------------------------------------------------------


def v1s(header: str) -> list[str]:
    return [part[3:] for part in header.split(",") if part.startswith("v1=")]


def test_a_rotated_out_secret_signs_beside_the_new_one_until_its_grace_ends(database, keystore):
    rotating = Webhooks(database, keystore, LOOPBACK_ALLOWED, secret_grace=dt.timedelta(hours=1))
    with receiving() as receiver:
        # Subscribed to nothing the pings are: a ping goes whatever the events.
        tenant, endpoint = register(rotating, receiver, events=["ticket.assigned"])
        old = endpoint["secret"]
        rotated = rotating.rotate_secret(tenant, endpoint["id"])
        new = rotated["secret"]
        assert new.startswith("whsec_") and new != old
        shown = rotating.endpoint(tenant, endpoint["id"])
        assert shown["previous_secret_valid_until"] == rotated["previous_secret_valid_until"]
        assert shown["secret_rotated_at"] == rotated["rotated_at"] and "secret" not in shown
        ping = rotating.ping(tenant, endpoint["id"])
        assert ping["event_type"] == "webhook.ping" and ping["status"] == "pending"
        assert dispatcher(database, keystore).run_once() == 1
        # The grace over (as time passing would make it): the old secret signs no more, even
        # before the purge clears it.
        with database.transaction() as cur:
            cur.execute("UPDATE webhook_endpoints SET previous_secret_until = now()")
        assert rotating.endpoint(tenant, endpoint["id"])["previous_secret_valid_until"] is None
        rotating.ping(tenant, endpoint["id"])
        assert dispatcher(database, keystore).run_once() == 1
        during, after = receiver.received

    header = during.headers[signing.SIGNATURE_HEADER]
    assert len(v1s(header)) == 2
    assert signing.verify(new, header, during.body) and signing.verify(old, header, during.body)
    assert json.loads(during.body)["data"] == {"webhook_id": endpoint["id"]}
    assert during.headers[signing.EVENT_TYPE_HEADER] == "webhook.ping"
    header = after.headers[signing.SIGNATURE_HEADER]
    assert len(v1s(header)) == 1
    assert signing.verify(new, header, after.body) and not signing.verify(old, header, after.body)
    assert [d["status"] for d in log_of(rotating, tenant, endpoint)] == ["delivered"] * 2

    with database.read() as cur:
        cur.execute("SELECT secret_sealed, previous_secret_sealed FROM webhook_endpoints")
        current, previous = cur.fetchone()
    assert new.encode() not in bytes(current) and old.encode() not in bytes(previous)
    assert rotating.expire_previous_secrets() == 1
    with database.read() as cur:
        cur.execute("SELECT previous_secret_sealed, previous_secret_until FROM webhook_endpoints")
        assert cur.fetchone() == (None, None)
    # Another tenant's endpoint is not found, for a rotation or a ping.
    stranger = str(uuid.uuid4())
    with pytest.raises(NotFound):
        rotating.rotate_secret(stranger, endpoint["id"])
    with pytest.raises(NotFound):
        rotating.ping(stranger, endpoint["id"])


# --- https: the checked address, the name's certificate ---------------------------------------


def _certificate(tmp_path: Path, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a self-signed certificate for ``name``, and a client context that
    trusts it (and nothing else)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client


def test_https_connects_to_the_checked_address_and_verifies_the_names_certificate(
    database, keystore, tmp_path: Path
):
    server, client = _certificate(tmp_path, "hooks.example.test")
    policy = addresses.Policy(allow_private=True)  # https only
    names = resolving("127.0.0.1")
    with receiving(tls=server) as receiver:
        registry = Webhooks(database, keystore, policy, names)
        tenant, endpoint = register(
            registry, receiver, url=f"https://hooks.example.test:{receiver.port}/hook"
        )
        _, wrong_name = register(
            registry, receiver, tenant, url=f"https://other.example.test:{receiver.port}/hook"
        )
        registry.fan_out(ticket_created(tenant))
        assert dispatcher(database, keystore, policy, resolver=names, tls=client).run_once() == 2
        (got,) = receiver.received
    assert signing.verify(endpoint["secret"], got.headers[signing.SIGNATURE_HEADER], got.body)
    assert log_of(registry, tenant, endpoint)[0]["outcome"] == "delivered"
    # The certificate names hooks.example.test: for other.example.test it does not verify.
    assert log_of(registry, tenant, wrong_name)[0]["outcome"] == "tls_failed"
