"""``topology.require``: what a consumer whose broker user may not declare checks instead."""

from __future__ import annotations

import pytest

from kernel import topology
from tests.support.recorder import SUBSCRIPTION


def test_declared_queues_are_found_and_a_missing_one_is_named(world) -> None:
    topology.declare(
        world.amqp_uri, [SUBSCRIPTION], world.delivery_limit, topology.DeadLetterLimits.of(world)
    )
    topology.require(world.amqp_uri, [SUBSCRIPTION.queue, SUBSCRIPTION.dead_letter_queue])
    with pytest.raises(topology.TopologyMissing, match="recorder.nowhere is not declared"):
        topology.require(world.amqp_uri, [SUBSCRIPTION.queue, "recorder.nowhere"])
