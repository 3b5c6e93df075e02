"""The dead-letter commands over the platform's queues, against a real RabbitMQ: the platform
hands the kernel its list (the kernel imports no service), and the kernel alone lists a named
queue."""

from __future__ import annotations

import json
import subprocess
import sys

import amqp
from kombu import Connection

from kernel import deadletters, topology
from kernel.testing import queue_depth, wait_until, world_env
from services import platform
from services.tickets.subscriptions import ACCOUNTS


def run(world, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        env=world_env(world),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_platform_lists_its_queues_and_the_kernel_a_named_one(world, infrastructure):
    topology.declare(world.amqp_uri, platform.subscriptions(), world.delivery_limit)
    with Connection(world.amqp_uri) as conn:
        channel = conn.channel()
        # As the broker sets one aside (a body naming someone, which is never shown).
        message = amqp.Message(
            b'{"contact": "grace@example.com"}', message_id="m-1", type="accounts.contact_created"
        )
        channel.basic_publish(message, exchange="", routing_key=ACCOUNTS.dead_letter_queue)
        channel.close()
    wait_until(lambda: queue_depth(infrastructure, world, ACCOUNTS.dead_letter_queue) == 1)

    # Every platform queue, in the platform's order; queues without dead letters list nothing.
    every = run(world, "services.platform", "dead-letters", "list")
    assert every.returncode == 0, every.stderr
    items = [json.loads(line) for line in every.stdout.splitlines()]
    assert [(i["queue"], i["message_id"]) for i in items] == [(ACCOUNTS.queue, "m-1")]
    assert "grace@example.com" not in every.stdout
    assert deadletters.list_dead_letters(
        world.amqp_uri, every=platform.dead_letter_queues()
    ) == deadletters.list_dead_letters(world.amqp_uri, ACCOUNTS.queue)

    # The kernel's own command: a named queue, the same answer; no list of its own to fall on.
    named = run(world, "kernel.deadletters", "list", "--queue", ACCOUNTS.queue)
    assert named.returncode == 0, named.stderr
    assert named.stdout == every.stdout
    unnamed = run(world, "kernel.deadletters", "list")
    assert unnamed.returncode == 2
    assert "services.platform dead-letters" in unnamed.stderr

    # A service's requests are never replayed, known by their queue's name alone.
    refused = run(world, "services.platform", "dead-letters", "replay", "rpc-tickets")
    assert refused.returncode == 1
    assert "never replayed" in refused.stderr
    assert queue_depth(infrastructure, world, ACCOUNTS.dead_letter_queue) == 1
