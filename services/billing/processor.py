"""The payment processor, behind a small adapter: billing never sees a card number.

The built-in sandbox processor runs the whole flow offline. Its test tokens:

| token | card | charging it |
| --- | --- | --- |
| ``tok_sandbox_visa`` | visa, last 4 ``4242``, 12/2030 | succeeds |
| ``tok_sandbox_mastercard`` | mastercard, last 4 ``4444``, 06/2031 | succeeds |
| ``tok_sandbox_declined`` | visa, last 4 ``0002``, 12/2030 | is declined |
| ``tok_sandbox_error`` | visa, last 4 ``0119``, 12/2030 | fails with a processor error |

Charges are idempotent by key: the same key never charges twice, it returns the first outcome.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol

import psycopg2

from kernel.db import Database


class UnknownToken(Exception):
    pass


class ProcessorError(Exception):
    """The processor could not be reached or failed: the charge may be retried (same key)."""


@dataclass(frozen=True)
class CardDetails:
    brand: str
    last4: str
    exp_month: int
    exp_year: int


@dataclass(frozen=True)
class ChargeOutcome:
    status: str  # "succeeded" or "declined"
    reference: str


class PaymentProcessor(Protocol):
    def describe(self, token: str) -> CardDetails: ...

    def charge(
        self, token: str, amount: int, currency: str, idempotency_key: str
    ) -> ChargeOutcome: ...


_SANDBOX = {
    "tok_sandbox_visa": (CardDetails("visa", "4242", 12, 2030), "succeeded"),
    "tok_sandbox_mastercard": (CardDetails("mastercard", "4444", 6, 2031), "succeeded"),
    "tok_sandbox_declined": (CardDetails("visa", "0002", 12, 2030), "declined"),
    "tok_sandbox_error": (CardDetails("visa", "0119", 12, 2030), "error"),
}


class SandboxProcessor:
    """Keeps its charges in a table of its own (``sandbox_charges``), keyed by idempotency key,
    committed in its own transaction: like a real processor's, a charge stands even when the
    caller's transaction then fails."""

    def __init__(self, db: Database):
        self._db = db

    def describe(self, token: str) -> CardDetails:
        if token not in _SANDBOX:
            raise UnknownToken(token)
        return _SANDBOX[token][0]

    def charge(self, token: str, amount: int, currency: str, idempotency_key: str) -> ChargeOutcome:
        if token not in _SANDBOX:
            raise UnknownToken(token)
        with self._db.transaction() as cur:
            return self._charge(cur, token, amount, currency, idempotency_key)

    def _charge(
        self,
        cur: psycopg2.extensions.cursor,
        token: str,
        amount: int,
        currency: str,
        idempotency_key: str,
    ) -> ChargeOutcome:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (idempotency_key,))
        cur.execute(
            "SELECT status, reference FROM sandbox_charges WHERE idempotency_key = %s",
            (idempotency_key,),
        )
        row = cur.fetchone()
        if row is not None:
            return ChargeOutcome(row[0], row[1])
        behaviour = _SANDBOX[token][1]
        if behaviour == "error":
            raise ProcessorError("the sandbox processor failed (test token)")
        outcome = ChargeOutcome(behaviour, f"ch_{uuid.uuid4().hex[:24]}")
        cur.execute(
            "INSERT INTO sandbox_charges (idempotency_key, amount, currency, status, reference)"
            " VALUES (%s, %s, %s, %s, %s)",
            (idempotency_key, amount, currency, outcome.status, outcome.reference),
        )
        return outcome
