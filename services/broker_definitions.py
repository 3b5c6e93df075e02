"""``deploy/rabbitmq/definitions.json``, made from the code: the exchanges, queues (with every
argument the code declares them with) and bindings of ``kernel.topology``, the services'
subscriptions and their RPC queues, at the default settings.

A broker that loads the file at boot has the platform's topology before any process starts, and
the processes' own declarations find it unchanged (tests/deploy/test_rabbitmq_definitions.py).
``python -m services.broker_definitions --write`` writes the file; without it, prints what
would be written and exits 1 if the file differs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from kombu import Queue

from kernel import topology
from kernel.config import Settings
from kernel.nameko_adapters.rpc_queues import rpc_dead_letter_queue, rpc_queue
from services.platform import RPC_SERVERS, subscriptions

PATH = Path(__file__).resolve().parents[1] / "deploy" / "rabbitmq" / "definitions.json"
VHOST = "/"


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
