"""The mail sender killed with SIGKILL mid-batch, right after the relay accepted a mail and
before its outcome committed (``mail.after_accept``), then started again: every mail arrives,
none is lost, and the one in the window is the only one sent twice, under the same Message-ID
(the documented at-least-once window, ``kernel.mail.sender``), so a receiver's dedup by
Message-ID sees each mail once. The ledger is told of each mail once."""

from __future__ import annotations

import collections
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from kernel.crypto.keystore import Keystore
from kernel.db import Database
from kernel.mail import outbox, sink
from kernel.mail.message import Mail, message_id
from kernel.stores import prepare_databases
from kernel.testing import wait_until, world_env

pytestmark = pytest.mark.reliability

MIGRATIONS = Path(__file__).resolve().parents[2] / "services" / "tickets" / "migrations"
MAILS = 8
CRASH_AT = 3


def sender(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "kernel.mail.sender", "tickets"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_a_sender_killed_mid_batch_loses_and_duplicates_nothing(world):
    prepare_databases(world, "tickets", MIGRATIONS)
    db = Database(world.database_dsn("tickets"))
    keystore = Keystore(Database(world.database_dsn("tickets", "keys")), world.master_keys)
    tenant, requester = uuid.uuid4(), uuid.uuid4()
    ids = []
    with db.transaction() as cur:
        for n in range(MAILS):
            ticket, reference = uuid.uuid4(), uuid.uuid4()
            mid = message_id("reply", str(reference), "desk.example.test")
            ids.append(mid)
            mail = Mail(
                "Desk <support@desk.example.test>",
                "Jane",
                "jane@example.test",
                f"Re: {n}",
                f"reply {n}",
                mid,
            )
            owed = outbox.Owed(
                tenant, requester, ticket, "ticket_reply", reference, mail, requester
            )
            assert outbox.enqueue(cur, keystore, owed) is not None
    with sink.running() as controller:
        env = {
            **world_env(world),
            "LEDGERDESK_SMTP_PORT": str(controller.port),
            # A lease of 4 steps x 0.5 s x a batch of 5: the killed batch is due again in 10 s.
            "LEDGERDESK_SMTP_TIMEOUT_SECONDS": "0.5",
        }
        killed = sender({**env, "LEDGERDESK_FAULTS": f"mail.after_accept:{CRASH_AT}"})
        assert killed.wait(timeout=60) == -9
        assert len(controller.handler.received) == CRASH_AT
        in_the_window = str(controller.handler.messages()[-1]["Message-ID"])
        with db.read() as cur:
            cur.execute("SELECT status, count(*) FROM mail_outbox GROUP BY status")
            assert dict(cur.fetchall()) == {"sent": CRASH_AT - 1, "pending": MAILS - CRASH_AT + 1}

        again = sender(env)
        try:

            def all_sent() -> bool:
                with db.read() as cur:
                    cur.execute("SELECT count(*) FROM mail_outbox WHERE status = 'sent'")
                    return cur.fetchone()[0] == MAILS

            wait_until(all_sent, timeout=60, what="every mail sent")
        finally:
            again.terminate()
            again.wait(timeout=20)
        received = [m["Message-ID"] for m in controller.handler.messages()]
    by_id = collections.Counter(str(m) for m in received)
    assert set(by_id) == set(ids)  # nothing lost
    # Only the mail in the window (accepted, then the kill) went twice, with its Message-ID.
    assert sorted(by_id.values()) == [1] * (MAILS - 1) + [2]
    assert by_id[in_the_window] == 2
    with db.read() as cur:
        cur.execute("SELECT count(*) FROM outbox WHERE routing_key = 'tickets.mail_sent'")
        assert cur.fetchone()[0] == MAILS  # the ledger hears of each mail once
        cur.execute("SELECT count(*) FROM mail_outbox WHERE sealed IS NOT NULL")
        assert cur.fetchone()[0] == 0
