"""The signature a receiver checks: HMAC-SHA256 over ``timestamp + "." + body``.

Every delivery carries::

    Ledgerdesk-Signature: t=1767225600,v1=5257a869e7ecebed...(64 hex digits)
    Ledgerdesk-Event-Id: 0b6f4c1e-...      (the same on every attempt: dedup on it)

``t`` is the Unix time the attempt was signed at, ``v1`` the hex HMAC-SHA256 of
``f"{t}.".encode() + body`` under the endpoint's secret (its UTF-8 bytes, ``whsec_`` prefix
included), as the widely used webhook schemes do. A receiver recomputes it over the raw body,
compares in constant time, and refuses a ``t`` too far from its clock (a replayed request).
Several ``v1`` entries may come: for a while after a rotation (``POST
/v1/webhooks/{id}/secret``) a delivery is signed under the new secret and the one it replaced,
``t=...,v1=<new>,v1=<previous>``, so a receiver still checking with the old secret keeps
accepting until it switches; any one matching is enough. ``verify`` is that check.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

SIGNATURE_HEADER = "Ledgerdesk-Signature"
EVENT_ID_HEADER = "Ledgerdesk-Event-Id"
EVENT_TYPE_HEADER = "Ledgerdesk-Event-Type"
ATTEMPT_HEADER = "Ledgerdesk-Delivery-Attempt"
SECRET_PREFIX = "whsec_"
# How far a signature's time may be from the receiver's clock, by default.
TOLERANCE_SECONDS = 300


def new_secret() -> str:
    """A fresh signing secret: 32 random bytes, URL-safe base64, with a recognisable prefix
    (a secret pasted where it does not belong can be found by it)."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``f"{timestamp}." + body`` under ``secret``."""
    message = str(int(timestamp)).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes, *previous: str) -> str:
    """The header's value: one ``v1`` under ``secret``, then one under each ``previous``."""
    signed = ",".join(f"v1={signature(s, timestamp, body)}" for s in (secret, *previous))
    return f"t={int(timestamp)},{signed}"


def verify(
    secret: str,
    header: str | None,
    body: bytes,
    tolerance: float = TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """Whether ``header`` (a ``Ledgerdesk-Signature`` value) signs ``body`` under ``secret``
    within ``tolerance`` seconds of ``now``: what a receiver checks before trusting a body."""
    if not header:
        return False
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit() and timestamp is None:
            timestamp = int(value)
        elif name == "v1" and value:
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        return False
    expected = signature(secret, timestamp, body)
    # Every candidate is compared, so the time taken does not say which one matched.
    # Bytes, not text: compare_digest refuses text that is not ASCII (a forged header's).
    matched = [
        hmac.compare_digest(expected.encode("ascii"), candidate.encode("utf-8"))
        for candidate in candidates
    ]
    return any(matched)
