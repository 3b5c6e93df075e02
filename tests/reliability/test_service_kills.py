"""kill -9 of each service, one at a time, while 5,000 ticket writes go through the gateway:
after each restart the platform serves again, and every write the gateway accepted is in the
tickets projection and in the audit ledger exactly once.
"""

from __future__ import annotations

import pytest

from kernel.testing import wait_until
from tests.reliability.load import (
    TicketLoad,
    assert_accepted_writes_kept,
    fast_stack,
    kill,
    ready,
    restart,
    ticket_writer,
    wait_for_progress,
)

pytestmark = pytest.mark.reliability

WRITES = 5_000
# Every service, and one of the gateway's processes (the other keeps the port open).
VICTIMS = ("tickets", "accounts", "audit", "billing", "retention", "gateway-1")
PROGRESS = 150  # accepted writes between a restart and the next kill


# 5,000 writes take a few minutes on a busy two-core machine.
@pytest.mark.timeout(900)
def test_each_service_killed_in_turn_during_five_thousand_writes(infrastructure):
    with fast_stack(infrastructure) as stack:
        tenant_id, key, contact_id = ticket_writer(stack)
        with TicketLoad(stack.url, key, contact_id, clients=8, total=WRITES) as load:
            wait_for_progress(load, PROGRESS)
            for name in VICTIMS:
                assert load.accepted() < WRITES, f"the load ended before {name} was killed"
                load.outcomes.phase = f"{name} killed"
                kill(stack, name)
                restart(stack, name)
                wait_until(lambda: ready(stack), timeout=90, what=f"readiness after {name}")
                load.outcomes.phase = f"{name} restarted"
                wait_for_progress(load, PROGRESS, what=f"writes accepted after {name} returned")
                load.outcomes.phase = "steady"
            load.join(timeout=400)
        outcomes = load.outcomes
        print(f"\nkill -9 of {', '.join(VICTIMS)}: {outcomes.summary()}")
        assert outcomes.unexpected == {}, outcomes.summary()
        assert outcomes.hangs == 0, outcomes.summary()
        assert len(outcomes.accepted) >= WRITES
        assert_accepted_writes_kept(stack.settings, tenant_id, outcomes.accepted)
