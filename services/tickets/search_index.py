"""The search index of tickets' words, which holds no word.

Ticket text is encrypted at rest under each ticket's key, so an index of its words in plaintext
would be the copy that erasure misses. ``search_terms`` holds instead, for each part of a ticket
(its subject, its body, each message), a keyed hash of each term of it (``terms.index_terms``:
every word cut to its prefixes of 3 to 16 letters) under the tenant's search key
(``kernel.crypto.blind``: derived from the tenant's own key in tickets' keystore). A search hashes
its words the same way (``services.tickets.search``). What ends a row:

- the requester's erasure deletes the rows of their tickets (``privacy.erase_subject``), and a
  writer's erasure the rows of the few messages under their own key (written before tickets had
  keys of their own: ``author_id``);
- a purge of closed tickets deletes the purged tickets' rows (``privacy.purge_category``);
- a tenant's destruction deletes the tenant's rows (the ``tenant_destroyed`` event, here, so a
  rebuild ends the same way) and shreds the key: a copy of the rows in a backup matches nothing
  that can ever be hashed again;
- a new subject replaces the subject's rows.

A projection like the others: written in the transaction of the event it comes from, rebuilt by
replay (``EventSourcedStore.rebuild("tickets_search")``), where what was erased reads as erased
and is never hashed. The rows say which tickets share a term (a tenant's most frequent digests
are its most frequent words), never what the term is.
"""

from __future__ import annotations

import argparse
import copy
import hmac
import logging
from collections.abc import Sequence
from typing import Any

import psycopg2

from kernel.config import Settings
from kernel.crypto.blind import BlindIndex
from kernel.crypto.fields import FieldCipher, is_erased
from kernel.envelope import Envelope
from kernel.projections import Projection
from kernel.stores import open_store
from kernel.uow import EventSourcedStore
from services.tickets.terms import index_terms

log = logging.getLogger(__name__)

NAME = "tickets_search"
# The kind of value in the tenant's blind index (its own key, apart from any other kind's).
KIND = "ticket_word"
# Digests are cut to 16 bytes: a collision among a tenant's terms (one in 2**64 at a few
# billion of them) costs a result too many, nothing more, and the index is half the size.
DIGEST_BYTES = 16

# One advisory lock for the first fill: of replicas starting together, one builds the index.
_FILL_LOCK = 0x5EA2C4


def digest(key: bytes, term: str) -> bytes:
    """A term's digest under the tenant's search key (``BlindIndex.key(tenant, KIND)``)."""
    return hmac.digest(key, term.encode(), "sha256")[:DIGEST_BYTES]


def digests(key: bytes, text: Any) -> bytes:
    """The digests of the terms of ``text``, end to end (one parameter for the statement);
    nothing for what is not text (erased, or still encrypted)."""
    if not isinstance(text, str) or is_erased(text):
        return b""
    return b"".join(digest(key, term) for term in index_terms(text))


# Rows of one part of a ticket: the digests come as one bytea, cut into rows by the server.
# The requester is the event's, or for a message of an older release (which does not name
# it) the ticket's as the tickets read model has it.
_INSERT = f"""
WITH part (blob) AS (SELECT %(digests)s::bytea),
     ticket (requester_id) AS (
       SELECT coalesce(%(requester)s::uuid,
                       (SELECT requester_id FROM tickets WHERE id = %(ticket)s)))
INSERT INTO search_terms
       (ticket_id, tenant_id, requester_id, author_id, part, message_id, internal, digest)
SELECT %(ticket)s, %(tenant)s, ticket.requester_id, %(author)s, %(part)s, %(message)s,
       %(internal)s, substring(part.blob FROM i FOR {DIGEST_BYTES})
  FROM part, ticket, generate_series(1, octet_length(part.blob), {DIGEST_BYTES}) AS i
 WHERE ticket.requester_id IS NOT NULL
"""


class SearchIndexProjection(Projection):
    """``search_terms`` from tickets' events. It takes them in plaintext (not ``ciphertext``)
    to hash their words, and keeps no word; each store applies a copy holding its keystore
    (``bound``)."""

    name = NAME
    tables = ("search_terms",)
    event_types = frozenset(
        {"ticket_created", "ticket_subject_changed", "message_added", "tenant_destroyed"}
    )
    _index: BlindIndex | None = None

    def bound(self, cipher: FieldCipher | None) -> Projection:
        if cipher is None:
            raise ValueError("the search index needs the store's keystore")
        mine = copy.copy(self)
        mine._index = BlindIndex(cipher.keystore)
        return mine

    def apply(self, cur: psycopg2.extensions.cursor, event: Envelope) -> None:
        self._apply(cur, event, {})

    def apply_batch(self, cur: psycopg2.extensions.cursor, events: Sequence[Envelope]) -> None:
        """``apply`` for each, each tenant's key derived once for the batch."""
        keys: dict[str, bytes | None] = {}
        for event in events:
            self._apply(cur, event, keys)

    def _apply(
        self, cur: psycopg2.extensions.cursor, event: Envelope, keys: dict[str, bytes | None]
    ) -> None:
        p = event.payload
        tenant = str(p["tenant_id"])
        if event.type == "tenant_destroyed":
            cur.execute("DELETE FROM search_terms WHERE tenant_id = %s", (tenant,))
            keys[tenant] = None
            return
        if tenant not in keys:
            keys[tenant] = self._key(tenant)
        key = keys[tenant]
        if event.type == "ticket_subject_changed":
            cur.execute(
                "DELETE FROM search_terms WHERE ticket_id = %s AND part = 'subject'",
                (p["ticket_id"],),
            )
        if key is None:
            return  # the tenant was destroyed: nothing of it is indexed
        row = {
            "ticket": p["ticket_id"],
            "tenant": tenant,
            "requester": p.get("requester_id"),
            "author": None,
            "message": None,
            "internal": False,
        }
        if event.type == "message_added":
            parts = [("message", p["body"])]
            row["message"] = p["message_id"]
            row["internal"] = p["internal"]
            if p["requester_id"] is None:
                # Version 1: the body is under its writer's key, whose erasure ends it too.
                row["author"] = p["author_id"]
        elif event.type == "ticket_created":
            parts = [("subject", p["subject"]), ("body", p["body"])]
        else:
            parts = [("subject", p["subject"])]
        for part, text in parts:
            blob = digests(key, text)
            if blob:
                cur.execute(_INSERT, {**row, "part": part, "digests": psycopg2.Binary(blob)})

    def _key(self, tenant: str) -> bytes | None:
        assert self._index is not None, "applied by a store (bound)"
        return self._index.key(tenant, KIND, create=True)


def build_if_new(store: EventSourcedStore) -> int | None:
    """Fill the index by replay if this database never built it (a deployment that had tickets
    before the index came); None if it had been. One process at a time, under an advisory lock,
    so of replicas starting together one builds it and the others find it built."""
    with store.db.connection() as conn:
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_lock(%s)", (_FILL_LOCK,))
                try:
                    cur.execute("SELECT 1 FROM projection_state WHERE name = %s", (NAME,))
                    if cur.fetchone() is not None:
                        return None
                    applied = store.rebuild(NAME, progress=False)
                    log.info("search index built from %d events", applied)
                    return applied
                finally:
                    cur.execute("SELECT pg_advisory_unlock(%s)", (_FILL_LOCK,))
        finally:
            conn.autocommit = False


def main(argv: list[str] | None = None, settings: Settings | None = None) -> int:
    """``python -m services.tickets.search_index rebuild``: the search index emptied and built
    again from tickets' events, in one transaction (searches wait for it, writes of tickets
    too). For tickets a replica of the previous release wrote during a rolling upgrade, which
    it did not index."""
    from services.tickets.events import REGISTRY
    from services.tickets.projections import PROJECTIONS

    parser = argparse.ArgumentParser(
        prog="python -m services.tickets.search_index", description=main.__doc__
    )
    parser.add_argument("command", choices=("rebuild",))
    parser.parse_args(argv)
    settings = settings or Settings.from_env(service="tickets")
    store = open_store(settings, "tickets", REGISTRY, PROJECTIONS, maxconn=2, prepare=False)
    try:
        applied = store.rebuild(NAME)
    finally:
        store.db.close()  # the keystore's connections end with the process
    print(f"search index rebuilt from {applied} events")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
