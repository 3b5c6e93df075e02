"""What the audit ledger tells an operator when scraped (``kernel.observability``'s state
gauges): how long since a platform checkpoint was signed (over every tenant log's head), and how
many entries none covers yet.

The ledger signs a checkpoint only when a log grew, so an idle ledger's checkpoint ages without
anything being wrong: a signer that stopped shows as an old checkpoint *with* entries no
checkpoint covers. Every replica of audit reads the same database: aggregate with ``max``.
"""

from __future__ import annotations

import datetime as dt

from kernel.observability import StateSample, state_gauge
from services.audit.ledger_reads import LedgerReads

CHECKPOINT_AGE = state_gauge(
    "ledgerdesk_audit_checkpoint_age_seconds",
    "Seconds since the audit ledger's newest platform checkpoint was signed (before the first:"
    " since its first entry; 0 while empty); idle, the ledger signs nothing new, so read it"
    " with ledgerdesk_audit_unsigned_entries",
)
UNSIGNED = state_gauge(
    "ledgerdesk_audit_unsigned_entries",
    "Audit ledger entries (of every tenant log) that no signed checkpoint covers yet",
)
GAUGES = (CHECKPOINT_AGE, UNSIGNED)


def read(ledger: LedgerReads, now: dt.datetime) -> list[StateSample]:
    age, unsigned = ledger.checkpoint_status(now)
    return [(CHECKPOINT_AGE, (), age), (UNSIGNED, (), unsigned)]
