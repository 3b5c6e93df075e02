"""Section 6: tickets' consumers on a backlog, with 1 replica and with 2.

The running tickets service is stopped, a backlog of accounts' ``contact_created`` events is
put on its ``tickets.accounts`` queue, and then 1 (or 2) tickets processes are started. Each
message is one unit of work (inbox record and directory upsert), so the directory's row count
is the number handled. The rate is taken from the moment every replica is consuming (the
broker's own consumer count) until the backlog is done, so start-up time is left out.
"""

from __future__ import annotations

import json
import time
import uuid

import pika
import psycopg2

from bench.harness import Context, Row, cores
from kernel.envelope import new_envelope
from kernel.testing import wait_until, world_env
from services import platform
from services.tickets.subscriptions import ACCOUNTS


def _backlog(amqp_uri: str, tenant: uuid.UUID, size: int) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(amqp_uri))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for n in range(size):
            contact = uuid.uuid4()
            envelope = new_envelope(
                type="contact_created",
                schema_version=1,
                source="accounts",
                stream_id=f"Contact-{contact}",
                stream_version=1,
                tenant_id=tenant,
                actor_id=None,
                payload={"contact_id": str(contact), "tenant_id": str(tenant), "n": n},
            )
            # Straight to tickets' queue: the backlog is tickets' alone, not audit's too.
            channel.basic_publish(
                "",
                ACCOUNTS.queue,
                json.dumps(envelope.to_dict()).encode(),
                pika.BasicProperties(
                    content_type="application/json",
                    content_encoding="utf-8",
                    delivery_mode=2,
                    message_id=str(envelope.event_id),
                    type=envelope.routing_key,
                ),
                mandatory=True,
            )
    finally:
        connection.close()


def _drain_rate(ctx: Context, replicas: int, size: int) -> float:
    stack = ctx.stack()
    tenant = uuid.uuid4()
    _backlog(stack.settings.amqp_uri, tenant, size)
    processes = {}
    for n in range(replicas):
        started = platform.start_processes(
            world_env(stack.settings), gateway_processes=0, only=("tickets",)
        )
        processes[f"tickets-{n}"] = started["tickets"]
    broker = pika.BlockingConnection(pika.URLParameters(stack.settings.amqp_uri))
    conn = psycopg2.connect(stack.settings.database_dsn("tickets"))
    conn.autocommit = True
    try:
        channel = broker.channel()

        def consuming() -> bool:
            declared = channel.queue_declare(ACCOUNTS.queue, passive=True)
            return declared.method.consumer_count >= replicas

        def handled() -> int:
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM directory WHERE tenant_id = %s", (tenant,))
                return cur.fetchone()[0]

        wait_until(consuming, timeout=120, interval=0.02, what="every replica to consume")
        began, at_start = time.perf_counter(), handled()
        wait_until(lambda: handled() >= size, timeout=600, interval=0.05, what="the backlog")
        took = time.perf_counter() - began
        return (size - at_start) / took
    finally:
        conn.close()
        broker.close()
        platform.stop_processes(processes)


def run(ctx: Context, sections: set[str]) -> list[Row]:
    size = 200 if ctx.quick else 1_000
    stack = ctx.stack()
    stack.stop("tickets")
    try:
        one = _drain_rate(ctx, 1, size)
        two = _drain_rate(ctx, 2, size)
    finally:
        stack.start("tickets")
    return [
        Row(
            "scaleout",
            "tickets consumers, 2 replicas",
            two,
            "msg/s",
            one,
            "1 replica",
            note=f"backlog of {size:,} contact_created; {cores()} cores, shared with the broker"
            " and the database",
        )
    ]
