"""The outbox relay: publishes committed outbox rows to RabbitMQ with publisher confirms.

A row is deleted once the broker confirmed it, never before, so a crash at any point loses
nothing (it may publish a row twice; consumers' inboxes absorb that), and no published body
outlives its publication: the gateway's access events carry IP addresses and user agents, which
the audit ledger keeps under period keys and shreds, and a copy kept here would outlive that.
Rows are read as "every row still in the outbox, in id order", never "rows after the last id
seen", which would skip rows that commit late. One relay per database is active at a time (a
PostgreSQL advisory lock elects it), which keeps each stream's order; others wait as standbys.
Messages are published ``mandatory``: a message that no queue is bound to comes back as an
error and its row stays in the outbox.

Run standalone with ``python -m kernel.relay SERVICE``; services also run it in-process.
"""

from __future__ import annotations

import argparse
import json
import logging
import select
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import amqp
import psycopg2
from kombu import Connection
from psycopg2.extensions import parse_dsn

from kernel import broker_users, faults
from kernel.db import DatabaseUnavailable, connect, describe

log = logging.getLogger(__name__)

_RELAY_LOCK = 0x0A7B0C5  # the advisory lock whose holder is the active relay of a database


class PublishFailed(Exception):
    pass


@dataclass
class RelayStats:
    published: int = 0
    failed: int = 0
    passes: int = 0
    last_error: str | None = None
    errors_by_routing_key: dict[str, int] = field(default_factory=dict)


class _ConfirmingPublisher:
    """Publishes a batch on one confirm-mode channel and waits for every confirm at once.

    Waiting per message costs a round trip each (~1.5k msg/s here); one wait per batch does not.
    """

    def __init__(
        self,
        amqp_uri: str,
        confirm_timeout: float,
        heartbeat: float = 10.0,
        name: str = "relay",
        ssl: dict[str, Any] | None = None,
    ):
        # Heartbeats on: a connection the broker (or the network) dropped is noticed in
        # seconds, not when the next publish hangs. Named, so operators find it in the broker.
        self._kombu = Connection(
            amqp_uri,
            connect_timeout=5,
            heartbeat=heartbeat,
            transport_options={"client_properties": {"connection_name": name}},
            ssl=ssl,
        )
        self._kombu.connect()
        self._conn: amqp.Connection = self._kombu.connection
        # The broker vouches for it (kernel.broker_users): consumers may take it as the sender.
        self._user_id = broker_users.connection_user(amqp_uri)
        self._channel = self._conn.channel()
        self._channel.confirm_select()
        self._channel.events["basic_ack"].add(self._on_ack)
        self._channel.events["basic_nack"].add(self._on_nack)
        self._channel.events["basic_return"].add(self._on_return)
        self._confirm_timeout = confirm_timeout
        self._next_tag = 1
        self._pending: dict[int, str] = {}  # delivery tag -> message id
        self._failed: dict[str, str] = {}  # message id -> reason
        self._confirmed: set[str] = set()

    def _settle(self, delivery_tag: int, multiple: bool, ok: bool) -> None:
        tags = [t for t in self._pending if t <= delivery_tag] if multiple else [delivery_tag]
        for tag in tags:
            message_id = self._pending.pop(tag, None)
            if message_id is None:
                continue
            if ok and message_id not in self._failed:
                self._confirmed.add(message_id)
            elif not ok:
                self._failed[message_id] = "negatively acknowledged by the broker"

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        self._settle(delivery_tag, multiple, True)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self._settle(delivery_tag, multiple, False)

    def _on_return(self, exc, exchange, routing_key, message) -> None:
        # RabbitMQ sends basic.return before the ack of the same message.
        message_id = message.properties.get("message_id")
        self._failed[message_id] = f"unroutable: no queue is bound to {exchange}/{routing_key}"

    def publish_batch(self, rows: list[tuple]) -> tuple[set[str], dict[str, str]]:
        self._confirmed, self._failed = set(), {}
        for _id, event_id, exchange, routing_key, body, trace in rows:
            headers = {f"nameko.{k}": v for k, v in trace.items()}
            message = amqp.Message(
                body,
                content_type="application/json",
                content_encoding="utf-8",
                delivery_mode=2,
                message_id=str(event_id),
                type=routing_key,
                user_id=self._user_id,
                application_headers=headers,
            )
            self._channel.basic_publish(message, exchange, routing_key, mandatory=True)
            self._pending[self._next_tag] = str(event_id)
            self._next_tag += 1
        deadline = time.monotonic() + self._confirm_timeout
        while self._pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PublishFailed(f"{len(self._pending)} confirms did not arrive in time")
            try:
                self._conn.drain_events(timeout=remaining)
            except TimeoutError:
                continue
        return self._confirmed, self._failed

    def keepalive(self) -> None:
        """Read what the broker sent (its heartbeats) and send ours when due; raises
        ``ConnectionForced`` once the broker has been silent for two intervals."""
        try:
            self._conn.drain_events(timeout=0)
        except TimeoutError:
            pass
        self._conn.heartbeat_tick()

    def close(self) -> None:
        try:
            self._kombu.release()
        except Exception:  # closing a broken connection must not hide the original error
            log.debug("closing the relay's broker connection failed", exc_info=True)


class OutboxRelay:
    def __init__(
        self,
        dsn: str,
        amqp_uri: str,
        batch_size: int = 200,
        confirm_timeout: float = 30.0,
        idle_wait: float = 1.0,
        max_backoff: float = 30.0,
        heartbeat: float = 10.0,
        ssl: dict[str, Any] | None = None,
    ):
        self.dsn = dsn
        self.ssl = ssl
        self.amqp_uri = amqp_uri
        self.batch_size = batch_size
        self.confirm_timeout = confirm_timeout
        self.idle_wait = idle_wait
        self.max_backoff = max_backoff
        self.heartbeat = heartbeat
        self.stats = RelayStats()
        self._stop = threading.Event()
        self._publisher: _ConfirmingPublisher | None = None
        self._lock_conn: psycopg2.extensions.connection | None = None
        self._work_conn: psycopg2.extensions.connection | None = None
        self._retry_after: dict[str, float] = {}  # stream -> monotonic time of its next attempt

    # --- one pass -----------------------------------------------------------------------------

    def publish_pending(self) -> int:
        """Publish one batch of the outbox's rows; returns how many were confirmed (and deleted)."""
        conn = self._work_conn
        assert conn is not None
        if self._publisher is None:
            self._publisher = _ConfirmingPublisher(
                self.amqp_uri,
                self.confirm_timeout,
                self.heartbeat,
                f"ledgerdesk relay {parse_dsn(self.dsn).get('dbname', '')}",
                ssl=self.ssl,
            )
        now = time.monotonic()
        with conn.cursor() as cur:
            cur.execute(
                "SELECT id, event_id, stream_id, exchange, routing_key, body FROM outbox"
                " ORDER BY id LIMIT %s",
                (self.batch_size,),
            )
            rows = cur.fetchall()
        conn.commit()
        self.stats.passes += 1
        batch, held_streams = [], set()
        for row_id, event_id, stream_id, exchange, routing_key, body in rows:
            # A stream whose earlier row failed waits as a whole, keeping its order.
            if stream_id in held_streams or self._retry_after.get(stream_id, 0) > now:
                held_streams.add(stream_id)
                continue
            trace = json.loads(body).get("trace") or {}
            batch.append((row_id, event_id, exchange, routing_key, body, trace, stream_id))
        if not batch:
            return 0
        try:
            confirmed, failed = self._publisher.publish_batch([b[:6] for b in batch])
        except Exception:
            self._drop_publisher()
            raise
        faults.point("relay.after_publish")
        published_ids = [b[0] for b in batch if str(b[1]) in confirmed]
        failures: list[tuple] = []
        with conn.cursor() as cur:
            if published_ids:
                # Deleted, not marked: consumers hold what they need, and a crash before this
                # commits only publishes the rows again.
                cur.execute("DELETE FROM outbox WHERE id = ANY(%s)", (published_ids,))
            for row_id, event_id, _x, routing_key, _b, _t, stream_id in batch:
                reason = failed.get(str(event_id))
                if reason is None:
                    continue
                cur.execute(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = %s WHERE id = %s"
                    " RETURNING attempts",
                    (reason, row_id),
                )
                attempts = cur.fetchone()[0]
                backoff = min(self.max_backoff, 0.5 * 2 ** min(attempts, 10))
                self._retry_after[stream_id] = time.monotonic() + backoff
                failures.append((event_id, routing_key, reason, backoff))
        conn.commit()
        # Counted once committed, so whoever reads the stats finds the rows already gone.
        for event_id, routing_key, reason, backoff in failures:
            self.stats.failed += 1
            self.stats.last_error = reason
            self.stats.errors_by_routing_key[routing_key] = (
                self.stats.errors_by_routing_key.get(routing_key, 0) + 1
            )
            # Ids only: the routing key and event id say what failed, the body stays put.
            log.error(
                "outbox event %s (%s) not published: %s; retrying in %.1fs",
                event_id,
                routing_key,
                reason,
                backoff,
            )
        # Named for the mark a row used to get; a crash here has the confirmed rows deleted.
        faults.point("relay.after_mark")
        for stream_id in {b[6] for b in batch if str(b[1]) in confirmed}:
            self._retry_after.pop(stream_id, None)
        self.stats.published += len(published_ids)
        return len(published_ids)

    # --- the loop -----------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def run(self, on_ready: Callable[[], None] | None = None) -> None:
        """Run until ``stop()``: wait to be the active relay, then publish as rows arrive."""
        while not self._stop.is_set():
            try:
                self._run_as_leader(on_ready)
            except (
                psycopg2.Error,
                DatabaseUnavailable,
                OSError,
                amqp.exceptions.AMQPError,
                PublishFailed,
            ) as exc:
                log.warning("relay pass failed, reconnecting: %s", exc)
                self._close()
                self._stop.wait(min(self.max_backoff, 2.0))
        self._close()

    def _run_as_leader(self, on_ready: Callable[[], None] | None) -> None:
        self._lock_conn = connect(self.dsn)
        self._lock_conn.autocommit = True
        with self._lock_conn.cursor() as cur:
            while not self._stop.is_set():
                cur.execute("SELECT pg_try_advisory_lock(%s)", (_RELAY_LOCK,))
                if cur.fetchone()[0]:
                    break
                self._stop.wait(self.idle_wait)
            else:
                return
            cur.execute("LISTEN outbox")
        self._work_conn = connect(self.dsn)
        log.info("relay active for %s", describe(self.dsn))
        if on_ready is not None:
            on_ready()
        while not self._stop.is_set():
            if self.publish_pending() >= self.batch_size:
                continue  # more may be waiting: no need to sleep
            self._wait_for_notify()
            if self._publisher is not None:
                self._publisher.keepalive()

    def _wait_for_notify(self) -> None:
        conn = self._lock_conn
        assert conn is not None
        readable, _, _ = select.select([conn], [], [], self.idle_wait)
        if readable:
            conn.poll()
            conn.notifies.clear()

    def _drop_publisher(self) -> None:
        if self._publisher is not None:
            self._publisher.close()
            self._publisher = None

    def _close(self) -> None:
        self._drop_publisher()
        for conn in (self._work_conn, self._lock_conn):
            if conn is not None and not conn.closed:
                conn.close()  # closing the session releases the advisory lock
        self._work_conn = self._lock_conn = None


def main(argv: list[str] | None = None) -> int:
    from kernel.config import Settings

    parser = argparse.ArgumentParser(description="Publish a service's outbox to RabbitMQ.")
    parser.add_argument("service", help="the service whose outbox to relay, e.g. accounts")
    args = parser.parse_args(argv)
    # A database and the broker only, as the prepare job: no secret.
    settings = Settings.from_env(service="prepare")
    # As every process (kernel.runner): below info, the kernel's own lines only.
    level = logging.getLevelNamesMapping()[settings.log_level.upper()]
    logging.basicConfig(
        level=max(level, logging.INFO), format="%(asctime)s relay %(levelname)s %(message)s"
    )
    logging.getLogger("kernel").setLevel(level)
    relay = OutboxRelay(
        settings.database_dsn(args.service),
        settings.amqp_uri,
        settings.relay_batch_size,
        ssl=settings.amqp_ssl(),
    )
    try:
        relay.run()
    except KeyboardInterrupt:
        relay.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
