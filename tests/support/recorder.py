"""A consumer for tests: records one effect per event it handles, using the kernel's inbox.

Effects have no unique key, so a duplicate effect would show as a second row; duplicates the
inbox absorbed are counted in ``duplicates``, proving redeliveries happened.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from kernel.envelope import Envelope, EventRegistry
from kernel.nameko_adapters.events import consume_events
from kernel.nameko_adapters.store import EventStoreDependency
from kernel.topology import Subscription
from kernel.tracing import Tracing

SUBSCRIPTION = Subscription("recorder.testsrc", ("testsrc.#",))


class PoisonMessage(Exception):
    pass


class RecorderService:
    name = "recorder"

    store = EventStoreDependency(
        EventRegistry(), migrations=Path(__file__).parent / "migrations", run_relay=False
    )
    tracing = Tracing()
    # In-process tests read how often each poison message was attempted.
    poison_attempts: Counter[str] = Counter()

    @consume_events(SUBSCRIPTION)
    def record(self, event: Envelope) -> None:
        if event.payload.get("poison"):
            self.poison_attempts[str(event.event_id)] += 1
            raise PoisonMessage("this message always fails")
        with self.store.unit_of_work() as uow:
            if not uow.first_delivery("recorder.record", event.event_id):
                uow.cur.execute("INSERT INTO duplicates (event_id) VALUES (%s)", (event.event_id,))
                return
            uow.cur.execute(
                "INSERT INTO effects (event_id, stream_id, stream_version) VALUES (%s, %s, %s)",
                (event.event_id, event.stream_id, event.stream_version),
            )
