"""TLS to RabbitMQ (amqps, client certificates) and to PostgreSQL (verify-full), against a
broker and a database server of the test's own that speak TLS only, with certificates made
here: the whole platform runs over them (so every connection it makes honours the settings:
one that did not would find no plain listener), a client without a certificate or with one of
another authority is refused by the broker, a client that trusts another authority refuses the
broker, and verify-full refuses a database server whose certificate names another host.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from kombu import Connection
from nameko.standalone.rpc import ClusterRpcProxy

from kernel import db
from kernel.config import Settings
from kernel.testing import Infrastructure, free_port, wait_until, world_env
from tests.reliability.load import fast_stack, ticket_writer
from tests.reliability.nodes import (
    PostgresServer,
    RabbitNode,
    ServerTls,
    postgres_server,
    rabbit_node,
)
from tests.support.certs import Authority, Issued

pytestmark = pytest.mark.reliability

CLIENT_NAME = "ledgerdesk-services"


class Pki:
    """Two authorities: ours, which signs the servers' and our client's certificates, and
    another, whose client certificate our servers must refuse and which our clients must not
    trust."""

    def __init__(self, folder: Path) -> None:
        self.ours = Authority(folder, "ours")
        self.other = Authority(folder, "other")
        # The broker is reached at 127.0.0.1 (kombu turns "localhost" into it).
        self.broker = self.ours.issue("broker", dns=("localhost",), ips=("127.0.0.1",))
        # The database server's certificate names localhost only: 127.0.0.1 is another name.
        self.database = self.ours.issue("database", dns=("localhost",))
        self.client = self.ours.issue(CLIENT_NAME, client=True)
        self.stranger = self.other.issue("stranger", client=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    return Pki(folder)


@pytest.fixture(scope="module")
def broker(pki: Pki) -> Iterator[RabbitNode]:
    with rabbit_node(ServerTls(pki.ours.cert, pki.broker)) as node:
        yield node


@pytest.fixture(scope="module")
def database(pki: Pki) -> Iterator[PostgresServer]:
    with postgres_server(ServerTls(pki.ours.cert, pki.database)) as server:
        yield server


def _amqps(node: RabbitNode) -> str:
    return f"{node.amqp_base}/"


def _tls(ca: Path, client: Issued | None) -> dict[str, Any]:
    options: dict[str, Any] = {
        "server_hostname": None,
        "cert_reqs": ssl.CERT_REQUIRED,
        "ca_certs": str(ca),
    }
    if client is not None:
        options.update(certfile=str(client.cert), keyfile=str(client.key))
    return options


def _open(node: RabbitNode, options: dict[str, Any]) -> None:
    with Connection(_amqps(node), connect_timeout=10, ssl=options) as conn:
        conn.connect()
        # A refused client certificate (TLS 1.3) is known at the first exchange after the
        # handshake: a channel is one.
        conn.channel().close()


def _broker_connections(node: RabbitNode) -> list[dict[str, Any]]:
    out = node.ctl("list_connections", "ssl", "peer_cert_subject", "--formatter", "json")
    return json.loads(out)


# --- the broker refuses, and is refused -------------------------------------------------------


def test_broker_accepts_our_client_certificate(broker: RabbitNode, pki: Pki) -> None:
    # The control for the refusals below: the same connection with our certificate works.
    _open(broker, _tls(pki.ours.cert, pki.client))


def test_broker_refuses_a_client_without_a_certificate(broker: RabbitNode, pki: Pki) -> None:
    with pytest.raises(OSError):  # ssl.SSLError is an OSError, as is a reset connection
        _open(broker, _tls(pki.ours.cert, None))


def test_broker_refuses_a_certificate_of_another_authority(broker: RabbitNode, pki: Pki) -> None:
    with pytest.raises(OSError):
        _open(broker, _tls(pki.ours.cert, pki.stranger))


def test_a_client_trusting_another_authority_refuses_the_broker(
    broker: RabbitNode, pki: Pki
) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        _open(broker, _tls(pki.other.cert, pki.client))


def test_the_settings_verify_the_brokers_certificate(broker: RabbitNode, pki: Pki) -> None:
    settings = Settings.from_env(
        {
            "LEDGERDESK_AMQP_URI": _amqps(broker),
            "LEDGERDESK_AMQP_CA_FILE": str(pki.other.cert),
            "LEDGERDESK_AMQP_CERT_FILE": str(pki.client.cert),
            "LEDGERDESK_AMQP_KEY_FILE": str(pki.client.key),
        }
    )
    with (
        pytest.raises(ssl.SSLCertVerificationError),
        Connection(settings.amqp_uri, connect_timeout=10, ssl=settings.amqp_ssl()) as conn,
    ):
        conn.connect()


def test_the_settings_refuse_a_broker_whose_certificate_names_another_host(pki: Pki) -> None:
    # A TLS listener with a certificate of our authority for another name: the client must
    # refuse it in the handshake, before a byte of AMQP (so no broker is needed behind it).
    elsewhere = pki.ours.issue("elsewhere", dns=("broker.elsewhere.test",))
    port = free_port()
    # A process of its own: this one's sockets are eventlet's.
    listener = subprocess.Popen(
        ["openssl", "s_server", "-quiet", "-accept", f"127.0.0.1:{port}"]
        + ["-cert", str(elsewhere.cert), "-key", str(elsewhere.key)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: _listening(port), timeout=30, what="the TLS listener")
        settings = Settings.from_env(
            {
                "LEDGERDESK_AMQP_URI": f"amqps://guest:guest@127.0.0.1:{port}/",
                "LEDGERDESK_AMQP_CA_FILE": str(pki.ours.cert),
                "LEDGERDESK_AMQP_CERT_FILE": str(pki.client.cert),
                "LEDGERDESK_AMQP_KEY_FILE": str(pki.client.key),
            }
        )
        with (
            pytest.raises(ssl.SSLCertVerificationError, match="mismatch"),
            Connection(settings.amqp_uri, connect_timeout=10, ssl=settings.amqp_ssl()) as conn,
        ):
            conn.connect()
    finally:
        listener.kill()
        listener.wait(10)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


# --- PostgreSQL: verify-full ------------------------------------------------------------------


def _database_settings(server: PostgresServer, host: str, ca: Path, pki: Pki) -> Settings:
    return Settings.from_env(
        {
            "LEDGERDESK_DATABASE_URL": f"postgresql://postgres@{host}:{server.port}/postgres",
            "LEDGERDESK_DATABASE_SSLMODE": "verify-full",
            "LEDGERDESK_DATABASE_SSLROOTCERT": str(ca),
            "LEDGERDESK_DATABASE_SSLCERT": str(pki.client.cert),
            "LEDGERDESK_DATABASE_SSLKEY": str(pki.client.key),
        }
    )


def test_database_connections_verify_the_server_and_present_our_certificate(
    database: PostgresServer, pki: Pki
) -> None:
    settings = _database_settings(database, "localhost", pki.ours.cert, pki)
    created = db.ensure_database(settings.server_dsn, settings.database_name("tickets"))
    assert created
    conn = db.connect(settings.database_dsn("tickets"))
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT current_database(), ssl, client_dn FROM pg_stat_ssl"
                " JOIN pg_stat_activity USING (pid) WHERE pid = pg_backend_pid()"
            )
            assert cur.fetchone() == ("ledgerdesk_tickets", True, f"/CN={CLIENT_NAME}")
    finally:
        conn.close()


def test_verify_full_refuses_a_server_whose_certificate_names_another_host(
    database: PostgresServer, pki: Pki
) -> None:
    # The same server, reached by an address its certificate does not name.
    settings = _database_settings(database, "127.0.0.1", pki.ours.cert, pki)
    with pytest.raises(db.DatabaseUnavailable, match="does not match host name"):
        db.connect(settings.server_dsn)


def test_verify_full_refuses_a_server_of_another_authority(
    database: PostgresServer, pki: Pki
) -> None:
    settings = _database_settings(database, "localhost", pki.other.cert, pki)
    with pytest.raises(db.DatabaseUnavailable, match="certificate verify failed"):
        db.connect(settings.server_dsn)


def test_the_database_server_refuses_a_connection_in_clear_or_without_our_certificate(
    database: PostgresServer, pki: Pki
) -> None:
    # What makes the platform test below a proof: only what presents our client certificate
    # over TLS is served.
    url = f"postgresql://postgres@localhost:{database.port}/postgres"
    with pytest.raises(psycopg2.OperationalError, match="no encryption"):
        psycopg2.connect(url + "?sslmode=disable").close()
    with pytest.raises(psycopg2.OperationalError, match="certificate"):
        psycopg2.connect(url + f"?sslmode=verify-full&sslrootcert={pki.ours.cert}").close()


# --- the whole platform over TLS --------------------------------------------------------------


@pytest.mark.timeout(400)
def test_the_platform_runs_over_amqps_and_verify_full(
    broker: RabbitNode, database: PostgresServer, pki: Pki
) -> None:
    infrastructure = Infrastructure(
        # The test kit's own connections (worlds made and dropped) need TLS too.
        f"postgresql://postgres@localhost:{database.port}/postgres?sslmode=require"
        f"&sslcert={pki.client.cert}&sslkey={pki.client.key}",
        broker.amqp_base,
        broker.management_url,
    )
    tls = {
        # The platform's URL has no TLS parameter: the settings below are all it has.
        "LEDGERDESK_DATABASE_URL": f"postgresql://postgres@localhost:{database.port}/postgres",
        "LEDGERDESK_AMQP_CA_FILE": str(pki.ours.cert),
        "LEDGERDESK_AMQP_CERT_FILE": str(pki.client.cert),
        "LEDGERDESK_AMQP_KEY_FILE": str(pki.client.key),
        "LEDGERDESK_DATABASE_SSLMODE": "verify-full",
        "LEDGERDESK_DATABASE_SSLROOTCERT": str(pki.ours.cert),
        "LEDGERDESK_DATABASE_SSLCERT": str(pki.client.cert),
        "LEDGERDESK_DATABASE_SSLKEY": str(pki.client.key),
    }
    with fast_stack(infrastructure, **tls) as stack:
        settings = stack.settings
        # RPC (signup, contacts) and events (tickets learns the contact from accounts, through
        # the outbox relay) across services, every one of them over amqps.
        tenant_id, key, _contact_id = ticket_writer(stack)
        assert tenant_id

        # A standalone RPC client, as the retention and gateway tools make them.
        with ClusterRpcProxy(settings.rpc_client_config(), timeout=30) as rpc:
            assert rpc.accounts.health()["database"] is True

        # The operator's routes open connections of their own: health and dead letters.
        operator = settings.operator_token
        health = stack.call("GET", "/v1/operator/health", key=operator)
        assert health.status_code == 200, health.text
        assert health.json()["broker"] is True
        letters = stack.call("GET", "/v1/operator/dead-letters", key=operator)
        assert letters.status_code == 200, letters.text

        # The operators' command line, from the settings alone.
        listed = subprocess.run(
            [sys.executable, "-m", "services.platform", "dead-letters", "list"],
            env=world_env(settings),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert listed.returncode == 0, listed.stderr

        # The broker's side: every connection is TLS with our client's certificate.
        connections = _broker_connections(broker)
        assert connections
        assert {(c["ssl"], c["peer_cert_subject"]) for c in connections} == {
            (True, f"CN={CLIENT_NAME}")
        }

        # The database's side: every connection of the platform presents our certificate.
        conn = db.connect(settings.server_dsn)
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT DISTINCT s.ssl, s.client_dn FROM pg_stat_ssl s"
                    " JOIN pg_stat_activity a USING (pid) WHERE a.datname LIKE %s",
                    (settings.database_prefix + "%",),
                )
                assert cur.fetchall() == [(True, f"/CN={CLIENT_NAME}")]
        finally:
            conn.close()
