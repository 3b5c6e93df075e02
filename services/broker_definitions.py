"""``deploy/rabbitmq/definitions.json``, made from the code: the exchanges, queues (with every
argument the code declares them with) and bindings of ``kernel.topology``, the services'
subscriptions and their RPC queues, at the default settings; and one broker user per process
kind (``ledgerdesk-<service>``, ``ledgerdesk-gateway``) with only the permissions it needs
(``permissions``).

The users have no password in this file: a password here would be a secret in version control.
The operator's own users file, imported after this one at every boot, gives each its password
(as compose's development ``dev-users.json`` does; docs/operations.md, "One broker user per
process"). Set passwords there rather than with ``rabbitmqctl change_password``: a boot that
imports a changed definitions file again would blank a password set only by hand.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kombu import Queue

from kernel import broker_users, topology
from kernel.config import Settings
from kernel.nameko_adapters.rpc_queues import rpc_dead_letter_queue, rpc_queue
from services.platform import RPC_SERVERS, subscriptions

PATH = Path(__file__).resolve().parents[1] / "deploy" / "rabbitmq" / "definitions.json"
VHOST = "/"
# Every kind of process that connects to the broker: each service, and the gateway.
PROCESSES: tuple[str, ...] = (*sorted(RPC_SERVERS), "gateway")
# Where a reply to a direct reply-to request, and an operator's replayed dead letter, is
# published: the default exchange, which RabbitMQ checks as this name.
DEFAULT_EXCHANGE = "amq.default"
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"


def user_of(process: str) -> str:
    """The broker user a process of this kind connects as (the kernel's rule: its consumers
    tell senders apart by it)."""
    return broker_users.user_of(process)


@dataclass(frozen=True)
class Permissions:
    """RabbitMQ's three regular expressions over resource names, for one user in one vhost:
    configure (declare, delete), write (publish to an exchange, bind a queue), read (consume,
    get, purge a queue; bind from an exchange)."""

    configure: str
    write: str
    read: str

    def allows(self, operation: str, resource: str) -> bool:
        return re.fullmatch(getattr(self, operation), resource) is not None


def _any_of(names: list[str]) -> str:
    return "^(" + "|".join(names) + ")$"


# The RPC methods each service calls on another (``<service>.<method>``, the routing key of a
# request on nameko's RPC exchange): a topic permission lets it publish those requests and no
# other, so a service cannot call, say, accounts' ``issue_api_key`` in an admin's name. Every
# process reads retention's log of forgetting as it starts (kernel.forgetting); the gateway,
# the API's front, calls every service. tests/deploy/test_rabbitmq_definitions.py checks the
# calls the code makes are here.
_EXPORTS = ("privacy_export", "export_count", "export_page", "export_file_chunk")
RPC_CALLS: dict[str, tuple[str, ...]] = {
    "accounts": (),
    "audit": (),
    "billing": ("accounts.billing_contact",),
    "retention": (
        "accounts.describe_subject",
        "accounts.rectify_subject",
        *(
            f"{service}.{method}"
            for service in ("accounts", "tickets", "billing", "audit")
            for method in _EXPORTS
        ),
    ),
    "tickets": (
        "accounts.describe_subject",
        "accounts.get_tenant",
        "accounts.inbound_contact",
        "accounts.mail_recipient",
    ),
}
EVERY_PROCESS_CALLS = ("retention.forgetting_log",)
# The routing key of the reply queue of a caller with one (nameko's own clients: an operator's
# ``nameko shell``, a test's): a uuid4, the replies to it published with it. The platform's
# own callers have none: their replies come by direct reply-to.
_REPLY_KEY = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


@dataclass(frozen=True)
class TopicPermission:
    """Which routing keys a user may publish with (write) and bind its queues with (read) on a
    topic exchange: RabbitMQ checks both, where the plain permissions see only the exchange's
    name. Without it, write on the events exchange would let a service publish another's events,
    and read would let it bind its own queue with ``#`` and hear every message."""

    exchange: str
    write: str
    read: str


def event_routing_keys(process: str) -> str:
    """The routing keys a process may publish to the events exchange with: its own events only,
    ``<process>.<type>``."""
    return rf"^{re.escape(process)}\..+$"


def topic_permissions(process: str) -> list[TopicPermission]:
    """A process's topic permissions on the events exchange and the RPC exchange."""
    if process not in PROCESSES:
        raise ValueError(f"unknown process {process!r}: one of {', '.join(PROCESSES)}")
    binding_keys = sorted(
        {key for s in subscriptions() if s.queue.startswith(f"{process}.") for key in s.bindings}
    )
    events = TopicPermission(
        topology.EVENTS_EXCHANGE,
        write=event_routing_keys(process),
        # Only the bindings of its own subscriptions; "^$" (none) when it has none.
        read=_any_of([re.escape(key) for key in binding_keys]) if binding_keys else "^$",
    )
    if process == "gateway":
        calls = [rf"{re.escape(service)}\..+" for service in sorted(RPC_SERVERS)]
    else:
        calls = [re.escape(call) for call in (*RPC_CALLS[process], *EVERY_PROCESS_CALLS)]
    # A service answers a caller with a reply queue on the RPC exchange, by its reply key.
    replies = [_REPLY_KEY] if process in RPC_SERVERS else []
    rpc = TopicPermission(
        rpc_queue("any").exchange.name,
        write=_any_of(calls + replies),
        # Nothing to bind: the prepare job binds the RPC queues, and replies come by direct
        # reply-to. (Plain read on the exchange is not granted either; this says it twice.)
        read="^$",
    )
    return [events, rpc]


def permissions(process: str) -> Permissions:
    """What a process of this kind needs, and no more: its own queues (its consumer queues and
    their dead-letter queues, named ``<process>.*``; a service's RPC queue and its dead letters),
    the platform's exchanges, and the default exchange its RPC replies go through. Another
    service's queue it can neither consume nor bind nor delete. The gateway also reads every
    dead-letter queue: operators list and replay dead letters through it."""
    if process not in PROCESSES:
        raise ValueError(f"unknown process {process!r}: one of {', '.join(PROCESSES)}")
    own = [rf"{re.escape(process)}\..+"]
    if process in RPC_SERVERS:
        own.append(rf"{re.escape(rpc_queue(process).name)}(\..+)?")
    events, rpc_exchange = (
        re.escape(name) for name in (topology.EVENTS_EXCHANGE, rpc_queue("any").exchange.name)
    )
    # The events and dead-letter exchanges it may not configure (which would let it delete
    # them) nor bind from: the prepare job declares the topology, and a process finding its
    # queues there consumes them as they are (kernel.nameko_adapters.events). The dead-letter
    # exchange, direct and so beyond topic permissions, it may not even publish to: no forged
    # dead letter, and no exchange-to-exchange route around the RPC exchange's topic checks.
    # The RPC exchange likewise: its RPC consumer finds its queue declared (kernel.nameko_adapters
    # .rpc), and every call, a standalone one included, takes its reply by direct reply-to
    # (kernel.nameko_adapters.proxy), so it needs no reply queue of its own and binds nothing.
    configure = own
    write = own + [events, rpc_exchange, re.escape(DEFAULT_EXCHANGE)]
    read = own + [re.escape(DIRECT_REPLY_TO)]
    if process == "gateway":
        read.append(r".+\.dead")
    return Permissions(_any_of(configure), _any_of(write), _any_of(read))


def _queue(queue: Queue) -> dict[str, Any]:
    return {
        "name": queue.name,
        "vhost": VHOST,
        "durable": True,
        "auto_delete": False,
        "arguments": dict(getattr(queue, "queue_arguments", None) or {}),
    }


def _exchange(name: str, type_: str) -> dict[str, Any]:
    return {
        "name": name,
        "vhost": VHOST,
        "type": type_,
        "durable": True,
        "auto_delete": False,
        "internal": False,
        "arguments": {},
    }


def _binding(source: str, queue: str, key: str) -> dict[str, Any]:
    return {
        "source": source,
        "vhost": VHOST,
        "destination": queue,
        "destination_type": "queue",
        "routing_key": key,
        "arguments": {},
    }


def definitions(settings: Settings | None = None) -> dict[str, Any]:
    settings = settings or Settings()
    limits = topology.DeadLetterLimits.of(settings)
    queues: list[dict[str, Any]] = []
    bindings: list[dict[str, Any]] = []
    for subscription in sorted(subscriptions(), key=lambda s: s.queue):
        queues.append(_queue(subscription.kombu_queue(settings.delivery_limit)))
        queues.append(_queue(subscription.kombu_dead_letter_queue(limits)))
        for key in subscription.bindings:
            bindings.append(_binding(topology.EVENTS_EXCHANGE, subscription.queue, key))
        bindings.append(
            _binding(
                topology.DEAD_LETTER_EXCHANGE, subscription.dead_letter_queue, subscription.queue
            )
        )
    rpc_exchange = rpc_queue("any").exchange
    for service in sorted(RPC_SERVERS):
        queue = rpc_queue(service)
        queues.append(_queue(queue))
        queues.append(_queue(rpc_dead_letter_queue(service, limits)))
        bindings.append(_binding(rpc_exchange.name, queue.name, queue.routing_key))
    return {
        "vhosts": [{"name": VHOST}],
        "exchanges": [
            _exchange(topology.EVENTS_EXCHANGE, topology.events_exchange.type),
            _exchange(topology.DEAD_LETTER_EXCHANGE, topology.dead_letter_exchange.type),
            _exchange(rpc_exchange.name, rpc_exchange.type),
        ],
        "queues": queues,
        "bindings": bindings,
        "policies": [],
        # No password (the module's docstring): the operator's users file gives it.
        "users": [
            {
                "name": user_of(process),
                "password_hash": "",
                "hashing_algorithm": "rabbit_password_hashing_sha256",
                "tags": [],
            }
            for process in PROCESSES
        ],
        "permissions": [
            {
                "user": user_of(process),
                "vhost": VHOST,
                "configure": permissions(process).configure,
                "write": permissions(process).write,
                "read": permissions(process).read,
            }
            for process in PROCESSES
        ],
        "topic_permissions": [
            {
                "user": user_of(process),
                "vhost": VHOST,
                "exchange": topic.exchange,
                "write": topic.write,
                "read": topic.read,
            }
            for process in PROCESSES
            for topic in topic_permissions(process)
        ],
    }


def render() -> str:
    return json.dumps(definitions(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help=f"write {PATH.name}")
    args = parser.parse_args(argv)
    text = render()
    if args.write:
        PATH.write_text(text)
        return 0
    sys.stdout.write(text)
    return 0 if PATH.read_text() == text else 1


if __name__ == "__main__":
    raise SystemExit(main())
