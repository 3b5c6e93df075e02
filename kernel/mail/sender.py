"""Sends what ``mail_outbox`` owes: claims due rows, opens each, sends it through the relay,
records the outcome. Every process of a sending service runs one (``dependency``); they share
the table.

- **Claimed** with ``FOR UPDATE SKIP LOCKED`` in a short transaction that counts the attempt
  and moves ``next_attempt_at`` past a lease covering the whole batch: two processes never
  send one mail at once, no transaction is open while the relay answers, and the mails of a
  process that dies are due again when their lease ends.
- **Sent** under its stable Message-ID, the same bytes at every attempt (rendered once, when
  queued).
- **Recorded** in one transaction, only while the claim is still this attempt's: sent (the
  sealed text dropped, ``mail_sent`` for the audit ledger through the service's outbox),
  temporarily refused (due again after a wait doubling from ``LEDGERDESK_MAIL_RETRY_SECONDS``
  up to an hour, until ``LEDGERDESK_MAIL_RETRY_HOURS`` after it was queued), or failed (a 5xx,
  or the window closed: ``mail_failed``, the sealed text dropped, the row kept to be shown).

**The window that stays at least once.** A crash after the relay accepted a mail (250 to its
DATA) and before the outcome commits leaves the row claimed but unrecorded: when its lease ends
it is sent again, with the same Message-ID and the same bytes. Nothing is lost; the duplicate is
recognisable (receiving systems and mail clients drop a second copy of a Message-ID, and the
development sink and the tests count by it). No SMTP exchange can close this window: the relay's
acceptance and our commit are two systems' states.

Log lines name mail ids, kinds, attempts, outcomes and reply codes; never an address, a subject
or a text.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Counter

from kernel import faults
from kernel import outbox as events_outbox
from kernel.config import Settings
from kernel.crypto.keystore import Keystore
from kernel.db import Database
from kernel.envelope import new_envelope
from kernel.mail import events, outbox, smtp

log = logging.getLogger(__name__)

ATTEMPTS = Counter("ledgerdesk_mail_attempts", "Mail send attempts, by outcome", ["outcome"])
FAILED = Counter(
    "ledgerdesk_mail_failed", "Mails marked failed: refused for good, or the retry window closed"
)

BATCH = 5
POLL_SECONDS = 0.5
PURGE_SECONDS = 60.0
MAX_WAIT = dt.timedelta(hours=1)
# SMTP steps bounded by the timeout in one exchange, about (connect, greeting, EHLO, STARTTLS,
# AUTH, MAIL, RCPT, DATA, end of data): a claimed mail is presumed dead after its batch's share.
STEPS_PER_MAIL = 4


@dataclass(frozen=True)
class Schedule:
    first: dt.timedelta
    window: dt.timedelta

    @classmethod
    def of(cls, settings: Settings) -> Schedule:
        return cls(
            dt.timedelta(seconds=settings.mail_retry_seconds),
            dt.timedelta(hours=settings.mail_retry_hours),
        )

    def next_attempt(
        self, created_at: dt.datetime, attempts: int, now: dt.datetime
    ) -> dt.datetime | None:
        """After ``attempts`` failed ones: when to try again, or None (the window closed)."""
        deadline = created_at + self.window
        if now >= deadline:
            return None
        wait = min(self.first * 2 ** min(max(attempts - 1, 0), 40), MAX_WAIT)
        return min(now + wait, deadline)


@dataclass(frozen=True)
class Claimed:
    mail_id: uuid.UUID
    tenant_id: uuid.UUID
    recipient_id: uuid.UUID
    key_subject_id: uuid.UUID
    kind: str
    reference_id: uuid.UUID | None
    sealed: bytes
    attempt: int


class MailSender:
    """Claims, sends and records mails of one service's database (see the module)."""

    def __init__(
        self,
        service: str,
        db: Database,
        keystore: Keystore,
        relay: smtp.Relay,
        schedule: Schedule,
        keep: dt.timedelta,
        batch: int = BATCH,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.service = service
        self.db = db
        self.keystore = keystore
        self.relay = relay
        self.schedule = schedule
        self.keep = keep
        self.batch = batch
        self.per_mail = dt.timedelta(seconds=relay.timeout * STEPS_PER_MAIL)
        self.lease = self.per_mail * batch
        self.sleep = sleep
        self._running = False
        self._purged_at = 0.0

    @classmethod
    def of(
        cls,
        service: str,
        db: Database,
        keystore: Keystore,
        settings: Settings,
        sleep: Callable[[float], None] = time.sleep,
    ) -> MailSender:
        keep = dt.timedelta(seconds=settings.mail_keep_days * settings.day_seconds)
        return cls(
            service,
            db,
            keystore,
            smtp.Relay.of(settings),
            Schedule.of(settings),
            keep,
            sleep=sleep,
        )

    # --- the loop -----------------------------------------------------------------------------

    def run(self) -> None:
        self._running = True
        while self._running:
            try:
                sent = self.run_once()
                self._purge()
            except Exception as exc:  # the database away: look again shortly
                log.warning("mail not claimed: %s", type(exc).__name__)
                sent = 0
            self.sleep(POLL_SECONDS if not sent else 0)

    def stop(self) -> None:
        """No more claims; a mail being sent finishes (an unrecorded one goes again after its
        lease)."""
        self._running = False

    def run_once(self) -> int:
        """Claim a batch, send each mail while the batch's lease allows, record each."""
        started = time.monotonic()
        claimed = self.claim(self.batch)
        for position, mail in enumerate(claimed):
            # The lease covers the batch: a mail not begun in its share is left to run out
            # its lease rather than sent as another process may claim it.
            if time.monotonic() - started > (self.lease - self.per_mail).total_seconds():
                log.warning("mail batch ran past its lease: %s left", len(claimed) - position)
                break
            self.deliver(mail)
        return len(claimed)

    def _purge(self) -> None:
        if time.monotonic() - self._purged_at < PURGE_SECONDS:
            return
        self._purged_at = time.monotonic()
        with self.db.transaction() as cur:
            purged = outbox.purge_finished(cur, self.keep)
        if purged:
            log.info("%s finished mails' rows deleted", purged)

    # --- one mail -----------------------------------------------------------------------------

    def claim(self, limit: int) -> list[Claimed]:
        with self.db.transaction() as cur:
            # A mail whose attempts were never recorded (its sender died each time) is not
            # retried past its window either.
            cur.execute(
                "UPDATE mail_outbox SET status = 'failed', next_attempt_at = NULL, sealed = NULL,"
                " finished_at = now(), last_outcome = 'unrecorded'"
                " WHERE id IN (SELECT id FROM mail_outbox WHERE status = 'pending'"
                "  AND next_attempt_at <= now() AND created_at < now() - %s"
                "  FOR UPDATE SKIP LOCKED)"
                " RETURNING id, tenant_id, recipient_id, kind, reference_id, attempts",
                (self.schedule.window + self.lease,),
            )
            for row in cur.fetchall():
                self._ledger(cur, events.MAIL_FAILED, *row, code=None, outcome="unrecorded")
            cur.execute(
                "UPDATE mail_outbox SET attempts = attempts + 1, next_attempt_at = now() + %s"
                " WHERE id IN (SELECT id FROM mail_outbox"
                "  WHERE status = 'pending' AND next_attempt_at <= now()"
                "  ORDER BY next_attempt_at LIMIT %s FOR UPDATE SKIP LOCKED)"
                " RETURNING id, tenant_id, recipient_id, key_subject_id, kind, reference_id,"
                " sealed, attempts",
                (self.lease, limit),
            )
            return [Claimed(*row) for row in cur.fetchall()]

    def deliver(self, mail: Claimed) -> str | None:
        """One attempt; the mail's state after it (None: not recorded)."""
        try:
            opened = outbox.open_mail(
                self.keystore, mail.tenant_id, mail.key_subject_id, mail.mail_id, mail.sealed
            )
        except Exception as exc:  # left claimed: due again once its lease ends
            log.error("mail %s not opened: %s", mail.mail_id, type(exc).__name__)
            return None
        if opened is None:
            # The recipient was erased after it was queued: nothing to send, nothing to keep.
            with self.db.transaction() as cur:
                cur.execute("DELETE FROM mail_outbox WHERE id = %s", (mail.mail_id,))
            log.info("mail %s (%s) dropped: its key is shredded", mail.mail_id, mail.kind)
            return None
        sender, recipients, data = opened
        result = smtp.send(self.relay, sender, recipients, data)
        if result.outcome == smtp.SENT:
            # The relay has it: a crash from here to the commit below sends it again.
            faults.point("mail.after_accept")
        ATTEMPTS.labels(outcome=result.outcome).inc()
        state = self.record(mail, result)
        if state == "failed":
            FAILED.inc()
        log.info(
            "mail %s (%s, %s) attempt %s: %s%s%s -> %s",
            mail.mail_id,
            mail.kind,
            mail.reference_id,
            mail.attempt,
            result.outcome,
            f" {result.code}" if result.code is not None else "",
            f" ({result.detail})" if result.detail else "",
            state or "not recorded: the claim ran out or the mail is gone",
        )
        return state

    def record(self, mail: Claimed, result: smtp.Result) -> str | None:
        with self.db.transaction() as cur:
            cur.execute(
                "SELECT now(), created_at FROM mail_outbox"
                " WHERE id = %s AND attempts = %s AND status = 'pending' FOR UPDATE",
                (mail.mail_id, mail.attempt),
            )
            row = cur.fetchone()
            if row is None:
                return None
            now, created_at = row
            if result.outcome == smtp.SENT:
                status, due = "sent", None
            elif result.outcome == smtp.PERMANENT:
                status, due = "failed", None
            else:
                due = self.schedule.next_attempt(created_at, mail.attempt, now)
                status = "pending" if due is not None else "failed"
            cur.execute(
                "UPDATE mail_outbox SET status = %s, next_attempt_at = %s, last_code = %s,"
                " last_outcome = %s,"
                " sealed = CASE WHEN %s = 'pending' THEN sealed END,"
                " finished_at = CASE WHEN %s = 'pending' THEN NULL ELSE now() END"
                " WHERE id = %s",
                (status, due, result.code, result.outcome, status, status, mail.mail_id),
            )
            fields = (mail.mail_id, mail.tenant_id, mail.recipient_id, mail.kind)
            if status == "sent":
                self._ledger(cur, events.MAIL_SENT, *fields, mail.reference_id, mail.attempt)
            elif status == "failed":
                self._ledger(
                    cur,
                    events.MAIL_FAILED,
                    *fields,
                    mail.reference_id,
                    mail.attempt,
                    code=result.code,
                    outcome=result.outcome,
                )
            return status

    def _ledger(
        self,
        cur,
        kind_of_event: str,
        mail_id: uuid.UUID,
        tenant_id: uuid.UUID,
        recipient_id: uuid.UUID,
        kind: str,
        reference_id: uuid.UUID | None,
        attempts: int,
        **more: object,
    ) -> None:
        """The outcome for the audit ledger, ids only, in the recording transaction."""
        payload = {
            "mail_id": str(mail_id),
            "tenant_id": str(tenant_id),
            "recipient_id": str(recipient_id),
            "kind": kind,
            "reference_id": None if reference_id is None else str(reference_id),
            "attempts": attempts,
            **more,
        }
        envelope = new_envelope(
            type=kind_of_event,
            schema_version=1,
            source=self.service,
            stream_id=f"mail-{mail_id}",
            stream_version=1,
            tenant_id=tenant_id,
            actor_id=self.service,
            payload=payload,
        )
        events_outbox.add(cur, [envelope])


def main(argv: list[str] | None = None, prog: str = "python -m kernel.mail.sender") -> int:
    """The sender of one service's database, alone (operators, and the reliability tests);
    ``ledgerdesk send-mail``."""
    from kernel.crypto.keystore import Keystore

    parser = argparse.ArgumentParser(prog=prog, description="Send a service's queued mail.")
    parser.add_argument("service", help="the service whose mail to send, e.g. tickets")
    parser.add_argument("--until-empty", action="store_true", help="stop once nothing is due")
    args = parser.parse_args(argv)
    settings = Settings.from_env(service=args.service)
    level = logging.getLevelNamesMapping()[settings.log_level.upper()]
    logging.basicConfig(
        level=max(level, logging.INFO), format="%(asctime)s mail %(levelname)s %(message)s"
    )
    logging.getLogger("kernel").setLevel(level)
    keystore = Keystore(
        Database(settings.database_dsn(args.service, "keys")),
        settings.master_keys,
        cache_seconds=settings.key_cache_seconds,
    )
    sender = MailSender.of(
        args.service, Database(settings.database_dsn(args.service)), keystore, settings
    )
    try:
        if args.until_empty:
            while sender.run_once():
                pass
        else:
            sender.run()
    except KeyboardInterrupt:
        sender.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
