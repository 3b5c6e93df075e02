"""The test kit: each test gets its own world (databases, a RabbitMQ vhost), and waits by retry.

Where the services come from, in order: the URLs in the environment (``LEDGERDESK_DATABASE_URL``,
``LEDGERDESK_AMQP_URI``, ``LEDGERDESK_RABBIT_MANAGEMENT_URL``); the local services at their
default addresses; containers started by testcontainers where a Docker engine exists. If none
is reachable the test fails with what was tried: a test that needs a broker never passes
without one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg2
import pytest
import requests

from kernel.cards import contains_card_number
from kernel.config import Settings
from kernel.db import drop_database
from kernel.nameko_adapters import patches

T = TypeVar("T")


def pytest_configure(config: pytest.Config) -> None:
    """Tests run services in-process (``container_factory``) and start them as processes
    (``kernel.runner``): both run on nameko as the kernel mends it."""
    patches.install()


@dataclass(frozen=True)
class Infrastructure:
    database_url: str
    amqp_base: str  # amqp://user:pass@host:port (no vhost)
    management_url: str  # http://user:pass@host:port

    def management(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        parts = urllib.parse.urlsplit(self.management_url)
        base = f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}"
        response = requests.request(
            method,
            base + path,
            auth=(parts.username or "guest", parts.password or "guest"),
            # Creating or deleting a vhost of quorum queues takes the broker a while under load.
            timeout=60,
            **kwargs,
        )
        response.raise_for_status()
        return response


def _postgres_reachable(url: str) -> bool:
    try:
        psycopg2.connect(url, connect_timeout=3).close()
        return True
    except psycopg2.OperationalError:
        return False


def _rabbit_reachable(management_url: str) -> bool:
    parts = urllib.parse.urlsplit(management_url)
    try:
        requests.get(
            f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}/api/overview",
            auth=(parts.username or "guest", parts.password or "guest"),
            timeout=3,
        ).raise_for_status()
        return True
    except requests.RequestException:
        return False


def _docker_available() -> bool:
    try:
        import docker

        docker.from_env().ping()
        return True
    except Exception:  # no client, no socket, no engine: all mean "no Docker here"
        return False


@contextlib.contextmanager
def _containers() -> Iterator[Infrastructure]:
    from testcontainers.postgres import PostgresContainer
    from testcontainers.rabbitmq import RabbitMqContainer

    with (
        PostgresContainer("postgres:15-alpine") as pg,
        RabbitMqContainer("rabbitmq:3.13-management-alpine").with_exposed_ports(
            5672, 15672
        ) as rabbit,
    ):
        host = rabbit.get_container_host_ip()
        yield Infrastructure(
            database_url=pg.get_connection_url(driver=None),
            amqp_base=f"amqp://guest:guest@{host}:{rabbit.get_exposed_port(5672)}",
            management_url=f"http://guest:guest@{host}:{rabbit.get_exposed_port(15672)}",
        )


def _amqp_base(uri: str) -> str:
    parts = urllib.parse.urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc}"


@pytest.fixture(scope="session")
def infrastructure() -> Iterator[Infrastructure]:
    defaults = Settings()
    database_url = os.environ.get("LEDGERDESK_DATABASE_URL", defaults.database_url)
    amqp_uri = os.environ.get("LEDGERDESK_AMQP_URI", defaults.amqp_uri)
    management_url = os.environ.get(
        "LEDGERDESK_RABBIT_MANAGEMENT_URL", defaults.rabbit_management_url
    )
    if _postgres_reachable(database_url) and _rabbit_reachable(management_url):
        yield Infrastructure(database_url, _amqp_base(amqp_uri), management_url)
    elif _docker_available():
        with _containers() as infra:
            yield infra
    else:
        pytest.fail(
            "these tests need PostgreSQL and RabbitMQ (with the management plugin): none "
            f"reachable at the configured URLs and no Docker engine to start them. Tried "
            f"{urllib.parse.urlsplit(database_url).hostname} and "
            f"{urllib.parse.urlsplit(management_url).netloc.rsplit('@', 1)[-1]}.",
            pytrace=False,
        )


@pytest.fixture
def world(infrastructure: Infrastructure) -> Iterator[Settings]:
    """Settings for a world of this test's own: a database prefix and a RabbitMQ vhost."""
    with make_world(infrastructure) as settings:
        yield settings


@pytest.fixture(scope="module")
def module_world(infrastructure: Infrastructure) -> Iterator[Settings]:
    """A world shared by one module's tests, for those that start a whole stack of processes."""
    with make_world(infrastructure) as settings:
        yield settings


@contextlib.contextmanager
def make_world(infrastructure: Infrastructure, **overrides: str) -> Iterator[Settings]:
    name = "ldt_" + secrets.token_hex(5)
    # Everything after the name is in the try: a vhost whose creation timed out on our side may
    # still be made by the broker, and a test that fails must not leave its world behind
    # either. Leaked vhosts pile up until the broker's management slows down for every test.
    try:
        yield _new_world(infrastructure, name, overrides)
    finally:
        with contextlib.suppress(requests.RequestException):
            infrastructure.management("DELETE", f"/api/vhosts/{name}")
        conn = psycopg2.connect(infrastructure.database_url)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (name + "%",))
                names = [row[0] for row in cur.fetchall()]
        finally:
            conn.close()
        for database in names:
            drop_database(infrastructure.database_url, database)


def _new_world(infrastructure: Infrastructure, name: str, overrides: dict[str, str]) -> Settings:
    infrastructure.management("PUT", f"/api/vhosts/{name}")
    user = urllib.parse.urlsplit(infrastructure.management_url).username or "guest"
    infrastructure.management(
        "PUT",
        f"/api/permissions/{name}/{user}",
        json={"configure": ".*", "write": ".*", "read": ".*"},
    )
    return Settings.from_env(
        {
            "LEDGERDESK_DATABASE_URL": infrastructure.database_url,
            "LEDGERDESK_AMQP_URI": f"{infrastructure.amqp_base}/{name}",
            "LEDGERDESK_RABBIT_MANAGEMENT_URL": infrastructure.management_url,
            "LEDGERDESK_DATABASE_PREFIX": name,
            "LEDGERDESK_KEY_CACHE_SECONDS": "0.001",
            "LEDGERDESK_DELIVERY_LIMIT": "4",
            # Many worlds run at once: each process's ops endpoints take a free port.
            "LEDGERDESK_OPS_PORT": "0",
            # No inbound mail listener unless a test asks for one (on a free port).
            "LEDGERDESK_MAIL_IN_PORT": "0",
            # Every test client is 127.0.0.1: the per-address limits, and the budget of
            # unauthenticated requests the access log writes one by one, are relaxed here and
            # tested by the tests that set them.
            "LEDGERDESK_CLIENT_RATE_LIMIT": "1000000",
            "LEDGERDESK_CLIENT_RATE_BURST": "1000000",
            "LEDGERDESK_AUTH_FAILURE_RATE_LIMIT": "1000000",
            "LEDGERDESK_AUTH_FAILURE_BURST": "1000000",
            "LEDGERDESK_SIGNUP_RATE_LIMIT": "1000000",
            "LEDGERDESK_SIGNUP_BURST": "1000000",
            "LEDGERDESK_UNAUTHENTICATED_LOG_LIMIT": "1000000",
            **overrides,
        }
    )


def world_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process live in ``settings``' world: every setting
    of the world (``Settings.to_env``), over this process's environment."""
    return {**os.environ, **settings.to_env()}


def wait_until(
    probe: Callable[[], T], timeout: float = 30.0, interval: float = 0.05, what: str = ""
) -> T:
    """Retry ``probe`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or probe}: last {last!r}")


class ManualClock:
    """A monotonic clock the test moves (``advance``), for what takes a ``clock`` (the
    keystore's cache): a test passes a time limit without sleeping through it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def queue_depth(infrastructure: Infrastructure, settings: Settings, queue: str) -> int:
    vhost = urllib.parse.quote(settings.database_prefix, safe="")
    info = infrastructure.management("GET", f"/api/queues/{vhost}/{urllib.parse.quote(queue)}")
    return int(info.json().get("messages", 0))


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def client_traceparent() -> tuple[str, str]:
    """A trace id and the W3C ``traceparent`` a test client sends to continue it.

    Never one that reads as a card number: the gateway continues no trace whose header holds
    one (``gateway.http.client_trace``), and random hex digits that run across the header's
    dashes make a Luhn-valid number in about one header of ten, which made tests that look for
    their trace id fail at random.
    """
    while True:
        trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
        header = f"00-{trace_id}-{span_id}-01"
        if not contains_card_number(header):
            return trace_id, header
