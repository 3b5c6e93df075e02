"""What this process changes in nameko and kombu, applied by ``install()`` (never on import):

- nameko's ``QueueConsumer``, stopped while still connecting, signals "last provider gone" once;
- nameko's publishers (RPC requests and replies, event dispatch, standalone proxies) take pooled
  connections that carry AMQP heartbeats like consumers do, and ``PublisherHeartbeats`` keeps
  the idle ones in kombu's pools beating."""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
from collections.abc import Callable, Iterator
from typing import Any

import eventlet
import kombu.pools
import nameko.amqp.publish
from kombu import Connection
from nameko.constants import DEFAULT_TRANSPORT_OPTIONS
from nameko.extensions import SharedExtension
from nameko.messaging import QueueConsumer

from kernel.config import Settings
from kernel.nameko_adapters.common import settings_of

log = logging.getLogger(__name__)


def _unregister_once_while_connecting(original: Callable[..., Any]) -> Callable[..., Any]:
    """nameko's QueueConsumer, stopped while still connecting (a slow start, a reconnect),
    signals "last provider gone" once per provider, and the second signal raises ("Trying to
    re-send() an already-triggered event"), so the process exits non-zero on a clean SIGTERM.
    Once is the signal."""

    @functools.wraps(original)
    def unregister_provider(self: QueueConsumer, provider: Any) -> None:
        if not self._consumers_ready.ready():
            if not self._last_provider_unregistered.ready():
                self._last_provider_unregistered.send()
            return
        original(self, provider)

    return unregister_provider


# The heartbeat pooled publisher connections ask for; ``PublisherHeartbeats`` sets it from the
# service's settings. A list so that the patched ``get_producer`` reads the current value.
_publisher_heartbeat: list[float] = [float(Settings.heartbeat)]


def use_publisher_heartbeat(seconds: float) -> None:
    """The heartbeat of publisher connections this process opens from now on."""
    _publisher_heartbeat[0] = float(seconds)


def _with_heartbeat(original: Callable[..., Any]) -> Callable[..., Any]:
    """nameko's publishers (RPC requests and replies, event dispatch, standalone proxies) take
    their connections from kombu's pools with no heartbeat: an idle one to a broker that
    vanished is found dead only when a publish on it fails. The heartbeat goes in the transport
    options because they reach py-amqp's connection and are part of the pool's key, so pools
    of heartbeat connections are never shared with callers that asked for none."""

    @contextlib.contextmanager
    def get_producer(
        amqp_uri: str,
        confirms: bool = True,
        ssl: Any = None,
        login_method: Any = None,
        transport_options: dict[str, Any] | None = None,
    ) -> Iterator[Any]:
        options = dict(
            DEFAULT_TRANSPORT_OPTIONS if transport_options is None else transport_options
        )
        options.setdefault("heartbeat", _publisher_heartbeat[0])
        with original(amqp_uri, confirms, ssl, login_method, options) as producer:
            yield producer

    return get_producer


def beat_idle_publishers() -> int:
    """Read what the broker sent on each idle pooled publisher connection of this process (its
    heartbeats, or its close) and send ours when due; one that is dead or missed the broker's
    beats is closed, so the next publish opens a fresh one (on another node, with failover
    URLs) instead of failing on it. Returns how many connections were checked."""
    checked = 0
    for pool in list(kombu.pools.connections.values()):
        if not pool.limit or not pool.connection.transport_options.get("heartbeat"):
            continue
        idle = []
        # Taken out of the pool while checked, so no publisher uses one meanwhile.
        with contextlib.suppress(pool.LimitExceeded):
            for _ in range(pool.limit):
                idle.append(pool.acquire(block=False))
        for connection in idle:
            try:
                if connection.connected:
                    checked += 1
                    _beat(connection)
            except Exception:  # any failure means the connection is no use: close it
                connection.collect()
            finally:
                connection.release()
    return checked


def _beat(connection: Connection) -> None:
    with contextlib.suppress(socket.timeout):
        for _ in range(100):  # an idle connection has a frame or two waiting, not a stream
            connection.drain_events(timeout=0)
    connection.heartbeat_check(rate=2)


class PublisherHeartbeats(SharedExtension):
    """Keeps the process's idle pooled publisher connections beating: the broker closes a
    connection that stays silent for two heartbeats, and nothing else reads or writes on a
    publisher connection between publishes."""

    def setup(self) -> None:
        self.heartbeat = settings_of(self.container).heartbeat
        use_publisher_heartbeat(self.heartbeat)

    def start(self) -> None:
        self.container.spawn_managed_thread(self._run)

    def _run(self) -> None:
        # Four checks per heartbeat: ours go out at least every half heartbeat.
        interval = max(0.25, self.heartbeat / 4)
        while True:
            eventlet.sleep(interval)
            try:
                beat_idle_publishers()
            except Exception:  # must not end the container: the next round tries again
                log.exception("checking idle publisher connections failed")


_installed = False


def install() -> None:
    """Mend nameko and kombu for this process: once, before any service starts. Called by
    ``kernel.runner`` and by the test kit (``kernel.testing``), never on import, so importing
    an adapter changes nothing by itself. Safe to repeat."""
    global _installed
    if _installed:
        return
    QueueConsumer.unregister_provider = _unregister_once_while_connecting(  # type: ignore[method-assign]
        QueueConsumer.unregister_provider
    )
    nameko.amqp.publish.get_producer = _with_heartbeat(nameko.amqp.publish.get_producer)
    _installed = True
