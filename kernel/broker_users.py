"""Who sent a message, as the broker vouches for it: every publisher of the platform sets the
AMQP ``user_id`` property to the user its connection logged in as, and RabbitMQ refuses a
publish whose ``user_id`` is another's (``PRECONDITION_FAILED``), so a consumer can trust it.

It matters for what arrives through the default exchange, where RabbitMQ checks only the
exchange's name: any process may put a message in any queue there (RPC replies and replayed
dead letters go that way). With ``LEDGERDESK_BROKER_USER_CHECK`` on (each process its own
broker user, ``ledgerdesk-<process>``: services/broker_definitions.py), consumers take an event
only from its source's user or the gateway's (dead letters an operator replays), and an RPC
request only from a process's user through the RPC exchange, whose topic permissions admit each
process's own calls only. Off, one shared user (development, tests) works as before.

User names may carry a prefix common to the platform's users (a test world's vhost); it is
read off the consumer's own user, ``<prefix>ledgerdesk-<its process>``.
"""

from __future__ import annotations

import functools
from typing import Any

from kombu import Connection

USER_PREFIX = "ledgerdesk-"
GATEWAY = "gateway"


def user_of(process: str, prefix: str = "") -> str:
    """The broker user a process of this kind connects as."""
    return f"{prefix}{USER_PREFIX}{process}"


@functools.lru_cache(maxsize=64)
def connection_user(amqp_uri: str) -> str:
    """The user a connection to ``amqp_uri`` logs in as (the first URI's, with failover URIs:
    they are one broker's nodes, with one set of users). Parsing only; nothing connects."""
    return str(Connection(amqp_uri).userid or "guest")


def stamped(amqp_uri: str, properties: dict[str, Any]) -> dict[str, Any]:
    """``properties`` with ``user_id`` set to the connection's own user: a copied message's
    ``user_id`` (a dead letter replayed, a queue's messages moved) is its first publisher's,
    which the broker refuses from anyone else."""
    return {**properties, "user_id": connection_user(amqp_uri)}


def prefix_of(own_user: str, own_process: str) -> str | None:
    """The prefix of the platform's user names, read off a process's own user; None when its
    user is not named after it (then no one's name can be told)."""
    suffix = user_of(own_process)
    if not own_user.endswith(suffix):
        return None
    return own_user[: -len(suffix)]


def event_sender_allowed(user_id: Any, source: str, prefix: str | None) -> bool:
    """Whether an event of ``source`` published by ``user_id`` is taken: its source process's
    user published it (the relay), or the gateway's (an operator's replay of a dead letter)."""
    if prefix is None or not isinstance(user_id, str):
        return False
    return user_id in (user_of(source, prefix), user_of(GATEWAY, prefix))


def request_sender_allowed(
    user_id: Any, exchange: str, rpc_exchange: str, prefix: str | None
) -> bool:
    """Whether an RPC request is taken: published by one of the platform's processes through the
    RPC exchange, where RabbitMQ's topic permissions let each publish only the calls it makes
    (``RPC_CALLS``; the gateway every call). Through the default exchange, which checks only its
    own name, no request is taken."""
    if prefix is None or not isinstance(user_id, str) or exchange != rpc_exchange:
        return False
    process = user_id[len(prefix) :] if user_id.startswith(prefix) else ""
    return process.startswith(USER_PREFIX) and len(process) > len(USER_PREFIX)
