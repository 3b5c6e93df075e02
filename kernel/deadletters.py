"""Dead letters: what the broker set aside after a message kept failing, listed and replayed.

A consumer queue dead-letters a message to ``<queue>.dead`` when its delivery limit runs out
(or at once, for a malformed envelope). An operator lists them, mends the cause, then replays
them into the live queue they came from:

    python -m services.platform dead-letters list [--queue QUEUE]
    python -m services.platform dead-letters replay QUEUE [--id MESSAGE_ID ...]

(``python -m kernel.deadletters`` takes the same commands for a named queue: the kernel knows
no services, so listing every platform queue is the platform's.)

Listings carry ids, types, counts and reasons only: a body may hold personal data, so it is
never printed, logged or returned. A dead letter lives ``LEDGERDESK_DEAD_LETTER_TTL_HOURS`` at
most (the broker drops it then, and the oldest once a queue holds
``LEDGERDESK_DEAD_LETTER_MAX_MESSAGES``), so a replay comes within that. Requests set aside from
an RPC queue keep no body at all (``rpc-<service>.dead``): they are listed, never replayed.
Reading a dead-letter queue takes its messages without acknowledging them and gives them back
when the channel closes, so listing moves nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import amqp
from kombu import Connection
from nameko.rpc import RPC_QUEUE_TEMPLATE

from kernel import broker_users

log = logging.getLogger(__name__)

DEAD_SUFFIX = ".dead"
# How often a request set aside from an RPC queue had been delivered: the quorum dead-letter
# queue counts deliveries of its own (listings included) in ``x-delivery-count``.
DELIVERIES_HEADER = "x-ledgerdesk-deliveries"
# A request set aside from an RPC queue keeps no body: these say how long it was, and in what.
BODY_BYTES_HEADER = "x-ledgerdesk-body-bytes"
CONTENT_TYPE_HEADER = "x-ledgerdesk-content-type"
# Broker headers that describe earlier deaths: a replayed message starts its life afresh.
_DEATH_HEADERS = frozenset(
    {
        "x-death",
        "x-delivery-count",
        *(f"x-{end}-death-{part}" for end in ("first", "last") for part in ("exchange", "queue")),
        *(f"x-{end}-death-reason" for end in ("first", "last")),
    }
)


class UnknownQueue(LookupError):
    """The dead-letter queue does not exist on the broker."""


class NotReplayable(ValueError):
    """Requests set aside from an RPC queue are listed, never replayed: their callers gave up
    long ago, and a request run now would answer no one."""


def live_queue(queue: str) -> str:
    """The consumer queue a name refers to: ``tickets.accounts`` or ``tickets.accounts.dead``."""
    return queue.removesuffix(DEAD_SUFFIX)


def is_rpc_queue(queue: str) -> bool:
    """Whether ``queue`` (live or dead) is a service's RPC queue, ``rpc-<service>``."""
    prefix, _, suffix = RPC_QUEUE_TEMPLATE.partition("{}")
    name = live_queue(queue)
    return name.startswith(prefix) and name.endswith(suffix) and len(name) > len(prefix + suffix)


@contextmanager
def _channel(
    amqp_uri: str, ssl: dict[str, Any] | None = None
) -> Iterator[tuple[amqp.Connection, amqp.Channel]]:
    with Connection(amqp_uri, connect_timeout=5, ssl=ssl) as kombu_conn:
        kombu_conn.connect()
        conn: amqp.Connection = kombu_conn.connection
        channel = conn.channel()
        try:
            yield conn, channel
        finally:
            if channel.is_open:
                # Unacknowledged messages go back to their queue, in their place.
                channel.close()


def _depth(conn: amqp.Connection, queue: str) -> int | None:
    """Messages ready in ``queue``, or None when it does not exist (a passive declare fails and
    closes its channel, so each probe has a channel of its own)."""
    channel = conn.channel()
    try:
        _name, count, _consumers = channel.queue_declare(queue, passive=True)
    except amqp.exceptions.NotFound:
        return None
    if channel.is_open:
        channel.close()
    return int(count)


def dead_letter_depths(
    amqp_uri: str, queues: Iterable[str], ssl: dict[str, Any] | None = None
) -> dict[str, int]:
    """``{queue: messages in queue.dead}`` for the queues whose dead-letter queue exists."""
    depths: dict[str, int] = {}
    with Connection(amqp_uri, connect_timeout=5, ssl=ssl) as kombu_conn:
        kombu_conn.connect()
        for queue in queues:
            depth = _depth(kombu_conn.connection, live_queue(queue) + DEAD_SUFFIX)
            if depth is not None:
                depths[live_queue(queue)] = depth
    return depths


def _when(value: Any) -> str | None:
    if isinstance(value, dt.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return moment.astimezone(dt.UTC).isoformat()
    if isinstance(value, int | float):
        return dt.datetime.fromtimestamp(value, dt.UTC).isoformat()
    return None


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return None if value is None else str(value)


def describe(queue: str, message: amqp.Message) -> dict[str, Any]:
    """What an operator needs to decide on a dead letter: ids, type, counts, reason, time."""
    properties = message.properties
    headers = properties.get("application_headers") or {}
    deaths = [d for d in headers.get("x-death") or () if isinstance(d, dict)]
    first = deaths[-1] if deaths else {}  # RabbitMQ puts the most recent death first
    event_type = _text(properties.get("type"))
    if event_type is None:
        try:
            body = json.loads(message.body)
            event_type = f"{body.get('source')}.{body.get('type')}" if body.get("type") else None
        except (ValueError, TypeError, AttributeError):
            event_type = None
    return {
        "queue": queue,
        "message_id": _text(properties.get("message_id")),
        "event_type": event_type,
        "deaths": sum(int(d.get("count", 1)) for d in deaths),
        # Counted where it died: an RPC consumer stamps it. A broker's dead letter has none: the
        # quorum dead-letter queue's own x-delivery-count counts its readings (this listing's
        # included), not the deliveries that failed; ``deaths`` and ``reason`` say those.
        "delivery_count": headers.get(DELIVERIES_HEADER),
        "reason": _text(headers.get("x-first-death-reason") or first.get("reason")),
        # An RPC consumer stamps a request it sets aside; the broker's dead letters have x-death.
        "dead_since": _when(first.get("time") or properties.get("timestamp")),
    }


def _take(channel: amqp.Channel, queue: str, limit: int) -> Iterator[amqp.Message]:
    """Up to ``limit`` messages of ``queue``, unacknowledged."""
    for _ in range(limit):
        message = channel.basic_get(queue, no_ack=False)
        if message is None:
            return
        yield message


def list_dead_letters(
    amqp_uri: str,
    queue: str | None = None,
    limit: int = 1000,
    every: Sequence[str] = (),
    ssl: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The dead letters of ``queue`` (a consumer or RPC queue), or else of each of ``every``
    (the caller's list: the platform's queues, which the kernel does not know) that has a
    dead-letter queue."""
    queues = [live_queue(queue)] if queue else [live_queue(name) for name in every]
    items: list[dict[str, Any]] = []
    with _channel(amqp_uri, ssl) as (conn, channel):
        for name in queues:
            depth = _depth(conn, name + DEAD_SUFFIX)
            if depth is None:
                if queue:
                    raise UnknownQueue(f"no dead-letter queue {name + DEAD_SUFFIX}")
                continue
            # Bounded by the depth seen now: messages given back are not read a second time.
            items.extend(describe(name, m) for m in _take(channel, name + DEAD_SUFFIX, depth))
            if len(items) >= limit:
                break
    return items[:limit]


def replay_dead_letters(
    amqp_uri: str,
    queue: str,
    message_ids: list[str] | None = None,
    ssl: dict[str, Any] | None = None,
) -> int:
    """Move dead letters of ``queue`` back into it (all, or those with ``message_ids``).

    Each is published to the live queue with a publisher confirm, and only then acknowledged
    in the dead-letter queue: a crash between the two leaves a copy in both, which the
    consumer's inbox absorbs; nothing is ever in neither. Returns how many moved.
    """
    name = live_queue(queue)
    if is_rpc_queue(name):
        raise NotReplayable(f"{name} holds requests, which are never replayed")
    wanted = set(message_ids) if message_ids is not None else None
    moved = 0
    with _channel(amqp_uri, ssl) as (conn, channel):
        depth = _depth(conn, name + DEAD_SUFFIX)
        if depth is None:
            raise UnknownQueue(f"no dead-letter queue {name + DEAD_SUFFIX}")
        if _depth(conn, name) is None:
            raise UnknownQueue(f"no queue {name} to replay into")
        publisher = conn.channel()
        publisher.confirm_select()
        try:
            for message in _take(channel, name + DEAD_SUFFIX, depth):
                message_id = _text(message.properties.get("message_id"))
                if wanted is not None and message_id not in wanted:
                    continue  # given back when the channel closes
                properties = dict(message.properties)
                # What was left of its life in the dead-letter queue, set when it was moved there
                # from an older one (kernel.queue_replacement): in the live queue it has a life
                # afresh.
                properties.pop("expiration", None)
                # Replayed by this connection's user, which the broker vouches for (its first
                # publisher's it would refuse): consumers take a replay from the gateway's.
                properties["user_id"] = broker_users.connection_user(amqp_uri)
                headers = {
                    k: v
                    for k, v in (properties.pop("application_headers", None) or {}).items()
                    if k not in _DEATH_HEADERS
                }
                replayed = amqp.Message(message.body, application_headers=headers, **properties)
                # The default exchange routes to the live queue only: the other subscribers
                # of the event had it already.
                publisher.basic_publish_confirm(replayed, exchange="", routing_key=name)
                channel.basic_ack(message.delivery_tag)
                moved += 1
                log.info("replayed dead letter %s into %s", message_id, name)
        finally:
            if publisher.is_open:
                publisher.close()
    return moved


def main(
    argv: list[str] | None = None,
    every: Sequence[str] = (),
    prog: str = "python -m kernel.deadletters",
) -> int:
    """The command line; ``every`` is what ``list`` without ``--queue`` lists (the platform
    passes its queues: ``python -m services.platform dead-letters``)."""
    from kernel import cli

    parser = argparse.ArgumentParser(
        prog=prog,
        description="List and replay dead letters (JSON lines on stdout).",
        epilog=cli.EXIT_CODES_HELP,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="list dead letters (ids, types, reasons; no bodies)")
    listing.add_argument("--queue", help="one consumer queue, e.g. tickets.accounts")
    replay = sub.add_parser("replay", help="move dead letters back into their queue")
    replay.add_argument("queue", help="the consumer queue, e.g. tickets.accounts")
    replay.add_argument("--id", action="append", dest="ids", help="only this message id")
    args = parser.parse_args(argv)
    if args.command == "list" and not args.queue and not every:
        parser.error(
            "name a queue (--queue); every platform queue: python -m services.platform dead-letters"
        )
    return cli.guarded(lambda: _run(args, every))


def _run(args: argparse.Namespace, every: Sequence[str]) -> int:
    from kernel import cli
    from kernel.config import Settings

    # The broker only, as the prepare job: no secret.
    settings = Settings.from_env(service="prepare")
    try:
        if args.command == "list":
            for item in list_dead_letters(
                settings.amqp_uri, args.queue, every=every, ssl=settings.amqp_ssl()
            ):
                print(json.dumps(item))
        else:
            moved = replay_dead_letters(
                settings.amqp_uri, args.queue, args.ids, ssl=settings.amqp_ssl()
            )
            print(json.dumps({"replayed": moved}))
    except (UnknownQueue, NotReplayable) as exc:
        print(str(exc), file=sys.stderr)
        return cli.Exit.FAILED
    return cli.Exit.OK


if __name__ == "__main__":
    sys.exit(main())
