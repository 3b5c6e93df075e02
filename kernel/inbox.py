"""The inbox: a consumer's record of the messages whose effects it has committed."""

from __future__ import annotations

import uuid

import psycopg2


def first_delivery(cur: psycopg2.extensions.cursor, consumer: str, message_id: uuid.UUID) -> bool:
    """Record the message as handled; False when it already was.

    Call it first in the transaction that holds the effects. A concurrent duplicate blocks on
    the primary key until the first commits (then sees the conflict) or rolls back (then wins),
    so exactly one delivery's effects ever commit.
    """
    cur.execute(
        "INSERT INTO inbox (consumer, message_id) VALUES (%s, %s)"
        " ON CONFLICT DO NOTHING RETURNING 1",
        (consumer, message_id),
    )
    return cur.fetchone() is not None
