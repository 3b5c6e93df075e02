"""Runtime operations of every process: health, readiness and Prometheus metrics.

Each process serves, on its ops port (``LEDGERDESK_OPS_PORT``; 0 picks a free one):

- ``GET /healthz``: 200 ``{"status": "ok"}`` while the process runs;
- ``GET /readyz``: 200 when its database and the broker answer (and its store has re-applied
  retention's log of forgetting, ``kernel.forgetting``), else 503, with the checks; the broker
  is asked on one connection kept for it (``BrokerCheck``), not a new one per probe;
- ``GET /metrics``: Prometheus text.

A service gets all of it from one dependency, ``Operations`` (``kernel.runner`` adds it to any
service class that does not declare one). Counters are incremented in one place each: the
durable consumer counts messages and redeliveries, ``Operations`` times every worker. Gauges
that describe state (outbox lag, dead letters, and what a service's extensions add: audit's
checkpoint age, retention's privacy requests) are read when scraped, so they are never stale.
Metrics carry service, queue, entrypoint, route-template and other bounded labels: never ids
or payloads.

How they add up across replicas: a counter or histogram counts what its own process did, so
the platform's figure is their sum (``sum(rate(...))``). A state gauge (``StateGauge``) reads
state every replica of a service shares (its database, a queue): each replica reports the same
value, so a sum would count it once per replica. Aggregate those with ``max``, as
deploy/grafana/ledgerdesk.json and deploy/prometheus/alerts.yml do; their help text says so.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import eventlet
from eventlet import wsgi
from eventlet.semaphore import Semaphore
from kombu import Connection
from nameko.extensions import DependencyProvider, SharedExtension
from nameko.rpc import RPC_QUEUE_TEMPLATE, Rpc
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kernel import db as kdb

log = logging.getLogger(__name__)

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

MESSAGES_HANDLED = Counter(
    "ledgerdesk_messages_handled_total",
    "Messages taken from a consumer queue, by outcome: handled (acknowledged), failed "
    "(returned to the queue), rejected (malformed, dead-lettered at once), dropped (an RPC "
    "request its full dead-letter queue refused)",
    ["service", "queue", "outcome"],
)
REDELIVERIES = Counter(
    "ledgerdesk_redeliveries_total",
    "Messages that arrived again after an earlier delivery failed or was interrupted",
    ["service", "queue"],
)
HANDLER_SECONDS = Histogram(
    "ledgerdesk_handler_seconds",
    "Time a worker took, per entrypoint (RPC method, event handler, HTTP endpoint, timer)",
    ["service", "entrypoint"],
)
HTTP_REQUESTS = Counter(
    "ledgerdesk_http_requests_total",
    "HTTP requests answered, by route template and status",
    ["route", "method", "status"],
)
RATE_LIMITED = Counter(
    "ledgerdesk_rate_limited_total",
    "Requests answered 429, by the limit that refused them: client (per client address, before "
    "anything else), auth_failure (the address's credentials were refused too often), signup "
    "(per client address), key (per API key)",
    ["limit"],
)
FAILED_AUTHENTICATIONS = Counter(
    "ledgerdesk_failed_authentications_total",
    "Requests whose credential was refused (an API key the gateway does not know, a wrong "
    "operator token), by credential; a request without one is not counted",
    ["credential"],
)
CREDENTIAL_CHECKS = Counter(
    "ledgerdesk_credential_checks_total",
    "API keys the gateway looked up in its credentials projection, by outcome: accepted, "
    "refused (unknown, revoked or inactive), unavailable (the projection not built or behind: "
    "a 503)",
    ["outcome"],
)
CREDENTIALS_BEHIND = Counter(
    "ledgerdesk_credentials_behind_total",
    "Checks of accounts' credential events (each gateway process, every second) that found "
    "them not being read in time: no consumer, messages waiting too long, or no answer",
)
ACCESSES_SUMMARIZED = Counter(
    "ledgerdesk_access_log_summarized_total",
    "Unauthenticated requests counted into an access_summarized event instead of being "
    "written to the access log one by one",
)
HTTP_SECONDS = Histogram(
    "ledgerdesk_http_request_seconds",
    "Time to answer an HTTP request, by route template",
    ["route", "method"],
)


# ---------------------------------------------------------------------- state gauges


@dataclass(frozen=True)
class StateGauge:
    """A gauge read when scraped from state every replica of a service shares (its database, a
    queue's depth): each replica reports the same value, so it is aggregated with ``max``, and a
    sum across replicas would be wrong. Declared once (``state_gauge``), like a ``Counter``."""

    name: str
    documentation: str
    labels: tuple[str, ...]

    def family(self) -> GaugeMetricFamily:
        """An empty family of this gauge, for a scrape to fill."""
        return GaugeMetricFamily(
            self.name, self.documentation + SAME_IN_EVERY_REPLICA, labels=list(self.labels)
        )


SAME_IN_EVERY_REPLICA = " (every replica reads the same value: aggregate with max, never sum)"
# Every state gauge of the platform by name: the kernel's below, and those services declare.
STATE_GAUGES: dict[str, StateGauge] = {}


def state_gauge(name: str, documentation: str, labels: Sequence[str] = ()) -> StateGauge:
    """Declare a state gauge; a name is declared once in the process."""
    if name in STATE_GAUGES:
        raise ValueError(f"the state gauge {name} is declared twice")
    gauge = StateGauge(name, documentation, tuple(labels))
    STATE_GAUGES[name] = gauge
    return gauge


# (gauge, label values, value): one sample, as an extension's ``read_state_gauges`` yields it.
StateSample = tuple[StateGauge, Sequence[str], float]

OUTBOX_LAG = state_gauge(
    "ledgerdesk_outbox_lag_events",
    "Outbox rows committed but not yet confirmed by the broker",
    ["service"],
)
OUTBOX_OLDEST = state_gauge(
    "ledgerdesk_outbox_oldest_seconds",
    "Age of the oldest unpublished outbox row (0 when none)",
    ["service"],
)
DEAD_LETTERS = state_gauge(
    "ledgerdesk_dead_letters",
    "Messages in a consumer or RPC queue's dead-letter queue (<queue>.dead)",
    ["queue"],
)


# ---------------------------------------------------------------------------- state


def outbox_status(database: kdb.Database) -> tuple[int, float | None]:
    """Outbox rows not yet published, and the age in seconds of the oldest (None when empty):
    the relay deletes a row once the broker confirmed it, so every row is still to go."""
    with database.transaction() as cur:
        cur.execute(
            "SELECT count(*), EXTRACT(EPOCH FROM now() - min(created_at))::float8 FROM outbox"
        )
        count, oldest = cur.fetchone()
    return int(count), (None if oldest is None else round(float(oldest), 3))


def service_health(database: kdb.Database) -> dict[str, Any]:
    """A service's ``health()`` answer: its database, and how far its outbox is behind."""
    try:
        lag, oldest = outbox_status(database)
    except Exception:  # any failure to read is "database not usable", whatever its type
        return {"database": False, "outbox_lag": 0, "outbox_oldest_seconds": None}
    return {"database": True, "outbox_lag": lag, "outbox_oldest_seconds": oldest}


class BrokerCheck:
    """Whether the broker answers, on one connection kept for the checks: readiness is probed
    every few seconds by the kubelet (and Prometheus scrapes the ops port), and a connection per
    probe would be a connection opened, authenticated and closed at the broker each time (and
    logged there). A check opens and closes a channel on the kept connection, a round trip the
    broker must answer; if that fails, the connection is dropped and one new connection tried
    before the answer is no."""

    def __init__(
        self,
        amqp_uri: str,
        name: str,
        timeout: float = 2.0,
        ssl: Callable[[], dict[str, Any] | None] | None = None,
        heartbeat: int = 0,
    ) -> None:
        self._uri = amqp_uri
        # Like every connection of the platform's, it beats (``run_beats``): the broker would
        # close one silent for two heartbeats between probes, and no connection goes unwatched.
        self.heartbeat = heartbeat
        # Called per connection: each gets TLS options of its own (Settings.amqp_ssl).
        self._ssl = ssl
        self._name = name
        self._timeout = timeout
        self._connection: Connection | None = None
        # Probes may come at once (the kubelet and a scrape): one check on the connection at a time.
        self._lock = Semaphore()
        self.connections_opened = 0

    def __call__(self) -> bool:
        with self._lock:
            if self._connection is not None and self._round_trip(self._connection):
                return True
            self.close()
            try:
                connection = Connection(
                    self._uri,
                    heartbeat=self.heartbeat,
                    connect_timeout=self._timeout,
                    ssl=self._ssl() if self._ssl is not None else None,
                    # Bounded reads and writes: a broker gone silent answers no, not never.
                    transport_options={
                        "read_timeout": self._timeout,
                        "write_timeout": self._timeout,
                        # So an operator tells it apart in the broker's list of connections.
                        "client_properties": {"connection_name": self._name},
                    },
                )
                connection.ensure_connection(max_retries=1)
            except Exception:  # any failure to connect means "not ready", whatever its type
                return False
            self.connections_opened += 1
            self._connection = connection
            if self._round_trip(connection):
                return True
            self.close()
            return False

    def beat(self) -> None:
        """Send (and check) the kept connection's heartbeat; a broken one is dropped, and the
        next check opens another."""
        with self._lock:
            if self._connection is None:
                return
            try:
                self._connection.heartbeat_check()
            except Exception:  # broken: dropped, the next probe connects again
                self.close()

    def run_beats(self) -> None:
        """Beat four times a heartbeat, for good (a managed thread of the holder's)."""
        interval = max(0.25, self.heartbeat / 4)
        while True:
            eventlet.sleep(interval)
            self.beat()

    @staticmethod
    def _round_trip(connection: Connection) -> bool:
        try:
            connection.channel().close()
            return True
        except Exception:  # a closed or broken connection, whatever the error
            return False

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.release()
            except Exception as exc:  # already broken: nothing left to release
                log.debug("readiness connection not released cleanly: %s", type(exc).__name__)


def render_metrics(*registries: CollectorRegistry) -> bytes:
    """The process's metrics (and those of ``registries``) in Prometheus text format."""
    return b"".join(generate_latest(r) for r in (REGISTRY, *registries))


# ------------------------------------------------------------------------ ops server


class _ScrapeTimeGauges(Collector):
    """Gauges read when scraped: a failing read leaves the gauge out rather than lie.

    The kernel's own (outbox, dead letters), then those of any extension of the service that
    declares ``state_gauges`` (a tuple of ``StateGauge``) and ``read_state_gauges()`` (their
    samples): audit's ledger, retention's privacy requests."""

    def __init__(self, server: OpsServer) -> None:
        self._server = server

    def collect(self) -> Iterator[Metric]:
        service = self._server.service_name
        lag, oldest = OUTBOX_LAG.family(), OUTBOX_OLDEST.family()
        database = self._server.database()
        if database is not None:
            try:
                count, age = outbox_status(database)
                lag.add_metric([service], count)
                oldest.add_metric([service], age or 0.0)
            except Exception as exc:  # the scrape goes on without the gauge
                log.warning("outbox gauges not read: %s", type(exc).__name__)
        yield lag
        yield oldest
        dead = DEAD_LETTERS.family()
        queues = self._server.consumer_queues()
        if queues:
            from kernel.deadletters import dead_letter_depths

            try:
                for queue, depth in dead_letter_depths(
                    self._server.amqp_uri, queues, self._server.amqp_ssl()
                ).items():
                    dead.add_metric([queue], depth)
            except Exception as exc:  # broker away: the gauge is absent, readyz says why
                log.warning("dead-letter gauges not read: %s", type(exc).__name__)
        yield dead
        for extension in self._server.container.extensions:
            read = getattr(extension, "read_state_gauges", None)
            if callable(read):
                yield from state_families(extension.state_gauges, read)


def state_families(
    gauges: Sequence[StateGauge], read: Callable[[], Iterable[StateSample]]
) -> Iterator[Metric]:
    """The families of ``gauges`` filled by ``read``; all of them empty if the read fails."""
    families = {gauge.name: gauge.family() for gauge in gauges}
    try:
        for gauge, labels, value in read():
            families[gauge.name].add_metric(list(labels), value)
    except Exception as exc:  # the scrape goes on without the gauges, rather than half of them
        log.warning("%s gauges not read: %s", ", ".join(families) or "state", type(exc).__name__)
        families = {gauge.name: gauge.family() for gauge in gauges}
    yield from families.values()


class OpsServer(SharedExtension):
    """The process's ops HTTP server (one per container), in an eventlet green thread."""

    def setup(self) -> None:
        from kernel.nameko_adapters.common import settings_of

        settings = settings_of(self.container)
        self.service_name: str = self.container.service_name
        self.amqp_uri: str = settings.amqp_uri
        # A method: each connection gets TLS options of its own (Settings.amqp_ssl).
        self.amqp_ssl: Callable[[], dict[str, Any] | None] = settings.amqp_ssl
        self.host: str = settings.ops_host
        self.requested_port: int = settings.ops_port
        self.port: int | None = None
        self._socket: Any = None
        self._thread: Any = None
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(_ScrapeTimeGauges(self))
        self._broker = BrokerCheck(
            self.amqp_uri,
            f"{self.service_name} readiness",
            ssl=self.amqp_ssl,
            heartbeat=settings.heartbeat,
        )
        self._beats = self.container.spawn_managed_thread(self._broker.run_beats)
        # Served from setup on: a service that waits there (to re-apply retention's log of
        # forgetting) is alive (/healthz) and says why it is not ready (/readyz), so an
        # orchestrator neither restarts it nor sends it traffic.
        self._socket = eventlet.listen((self.host, self.requested_port))
        self.port = self._socket.getsockname()[1]
        self._thread = self.container.spawn_managed_thread(self._serve)
        self._started = False
        log.info("operations endpoints of %s on port %s", self.service_name, self.port)

    def start(self) -> None:
        # Every extension is set up by now, and entrypoints start taking work.
        self._started = True

    def _serve(self) -> None:
        # No access log: probes every few seconds would drown the process's own lines.
        wsgi.server(self._socket, self.wsgi_app, log_output=False, log=None)

    def stop(self) -> None:
        # Subextensions stop last, after every worker finished: the probes answer to the end.
        self.kill()

    def kill(self) -> None:
        beats = getattr(self, "_beats", None)
        if beats is not None:
            beats.kill()
            self._beats = None
        broker = getattr(self, "_broker", None)  # killed before its setup ran: nothing opened
        if broker is not None:
            broker.close()
        if self._thread is not None:
            self._thread.kill()
            self._thread = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    # --- what the endpoints read ----------------------------------------------------------

    def database(self) -> kdb.Database | None:
        """The service's own database, from whichever dependency holds it."""
        for extension in self.container.extensions:
            store = getattr(extension, "store", None)
            for candidate in (getattr(store, "db", None), getattr(extension, "db", None)):
                if isinstance(candidate, kdb.Database):
                    return candidate
        return None

    def consumer_queues(self) -> list[str]:
        """The queues this process consumes: its subscriptions', and its RPC queue."""
        queues = {
            subscription.queue
            for entrypoint in self.container.entrypoints
            if (subscription := getattr(entrypoint, "subscription", None)) is not None
        }
        if any(isinstance(entrypoint, Rpc) for entrypoint in self.container.entrypoints):
            queues.add(RPC_QUEUE_TEMPLATE.format(self.service_name))
        return sorted(queues)

    def readiness(self) -> tuple[bool, dict[str, bool]]:
        checks = {"broker": self._broker()}
        database = self.database()
        if database is not None:
            checks["database"] = database.ping()
        # And what a dependency says of itself (a store that has not re-applied retention's
        # log of forgetting yet, say).
        for extension in self.container.extensions:
            more = getattr(extension, "readiness_checks", None)
            if callable(more):
                checks.update(more())
        if not self._started:
            # Served from setup on, while other extensions (the store creating its databases)
            # may not be set up yet: nothing is ready before the container starts.
            checks["started"] = False
        return all(checks.values()), checks

    # --- the WSGI app -----------------------------------------------------------------------

    def wsgi_app(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return _answer(start_response, 405, {"status": "method not allowed"})
        if path == "/healthz":
            return _answer(start_response, 200, {"status": "ok"})
        if path == "/readyz":
            ready, checks = self.readiness()
            body = {"status": "ready" if ready else "not ready", "checks": checks}
            return _answer(start_response, 200 if ready else 503, body)
        if path == "/metrics":
            payload = render_metrics(self._registry)
            start_response(
                "200 OK",
                [("Content-Type", METRICS_CONTENT_TYPE), ("Content-Length", str(len(payload)))],
            )
            return [payload]
        return _answer(start_response, 404, {"status": "not found"})


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


def _answer(start_response: Callable, status: int, body: dict[str, Any]) -> list[bytes]:
    payload = json.dumps(body).encode()
    start_response(
        f"{status} {_REASONS[status]}",
        [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))],
    )
    return [payload]


# ------------------------------------------------------------------------- dependency


class Operations(DependencyProvider):
    """Declare once per service: the ops server, and a timer around every worker.

    ``status_of`` maps an exception an HTTP entrypoint raised to the status it answers with
    (the gateway's problem table), for the request counters.
    """

    server = OpsServer()

    def __init__(self, status_of: Callable[[BaseException], int] | None = None) -> None:
        self.status_of = status_of
        self._started: dict[int, float] = {}

    @property
    def port(self) -> int | None:
        return self.server.port

    def get_dependency(self, worker_ctx: Any) -> OpsServer:
        return self.server

    def worker_setup(self, worker_ctx: Any) -> None:
        self._started[id(worker_ctx)] = time.perf_counter()

    def worker_result(self, worker_ctx: Any, result: Any = None, exc_info: Any = None) -> None:
        started = self._started.pop(id(worker_ctx), None)
        if started is None:
            return
        elapsed = time.perf_counter() - started
        entrypoint = worker_ctx.entrypoint
        HANDLER_SECONDS.labels(worker_ctx.service_name, entrypoint.method_name).observe(elapsed)
        route = getattr(entrypoint, "url", None)
        if route is None:
            return
        method = str(getattr(entrypoint, "method", "")).upper()
        if exc_info:
            exc = exc_info[1]
            status = self.status_of(exc) if self.status_of is not None else 500
        else:
            status = getattr(result, "status_code", 200)
        HTTP_REQUESTS.labels(route, method, str(status)).inc()
        HTTP_SECONDS.labels(route, method).observe(elapsed)

    def worker_teardown(self, worker_ctx: Any) -> None:
        # worker_result is skipped for a worker killed mid-flight: forget its start here.
        self._started.pop(id(worker_ctx), None)
