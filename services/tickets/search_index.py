"""The search index of tickets' words, which holds no word.

Ticket text is encrypted at rest under each ticket's key, so an index of its words in plaintext
would be the copy that erasure misses. ``search_terms`` holds instead, for each part of a ticket
(its subject, its body, each message), a keyed hash of each term of it (``terms.index_terms``:
every word cut to its prefixes of 3 to 16 letters) under the tenant's search key
(``kernel.crypto.blind_index``, kind ``ticket_word``: derived from the tenant's own key in
tickets' keystore). A search hashes its words the same way (``services.tickets.search``). What
ends a row:

- the requester's erasure deletes the rows of their tickets (``privacy.erase_subject``), and a
  writer's erasure the rows of the few messages under their own key (written before tickets had
  keys of their own: ``author_id``);
- a purge of closed tickets deletes the purged tickets' rows (``privacy.purge_category``);
- a tenant's destruction deletes the tenant's rows (the ``tenant_destroyed`` event, here, so a
  rebuild ends the same way) and shreds the key: a copy of the rows in a backup matches nothing
  that can ever be hashed again;
- a new subject replaces the subject's rows;
- rows a write committed after its requester's erasure (it read the key before the shred) are
  swept by a timer (``privacy.sweep_erased_leftovers``).

A projection like the others: written in the transaction of the event it comes from, rebuilt by
replay (``EventSourcedStore.rebuild("tickets_search")``, or this module's command), where what
was erased reads as erased and is never hashed; a database that never built it is built when
the service first starts (``NewReadModels``). The rows say which tickets share a term (a
tenant's most frequent digests are its most frequent words), never what the term is.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg2

from kernel.config import Settings
from kernel.crypto.blind_index import BlindIndex
from kernel.crypto.fields import is_erased
from kernel.crypto.primitives import UUIDLike
from kernel.envelope import Envelope
from kernel.projections import KeyedProjection
from kernel.stores import open_store
from services.tickets.terms import index_terms

NAME = "tickets_search"
# The kind of value in the tenant's blind index (its own key, apart from any other kind's).
KIND = "ticket_word"
# Digests are cut to 16 bytes: a collision among a tenant's terms (one in 2**64 at a few
# billion of them) costs a result too many, nothing more, and the index is half the size.
DIGEST_BYTES = 16


def digests(
    index: BlindIndex, tenant_id: UUIDLike, terms: Iterable[str], create: bool = True
) -> list[bytes] | None:
    """The digests of ``terms`` in the tenant's search index, in order; None when the tenant
    has no key (destroyed, or with ``create=False`` none made yet): nothing can match then."""
    found = index.digests(tenant_id, KIND, terms, create)
    return None if found is None else [d[:DIGEST_BYTES] for d in found]


def _text_digests(index: BlindIndex, tenant_id: str, text: Any) -> bytes | None:
    """The digests of the terms of ``text``, end to end (one parameter for the statement);
    None once the tenant's key is gone, nothing for what is not text (erased)."""
    if not isinstance(text, str) or is_erased(text):
        return b""
    found = digests(index, tenant_id, index_terms(text))
    return None if found is None else b"".join(found)


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


class SearchIndexProjection(KeyedProjection):
    """``search_terms`` from tickets' events. It takes them in plaintext (not ``ciphertext``)
    to hash their words, and keeps no word; each store applies a copy holding its keys
    (``KeyedProjection.bound``)."""

    name = NAME
    tables = ("search_terms",)
    event_types = frozenset(
        {"ticket_created", "ticket_subject_changed", "message_added", "tenant_destroyed"}
    )

    def apply(self, cur: psycopg2.extensions.cursor, event: Envelope) -> None:
        self._apply(cur, event, self.blind_index)

    def apply_batch(self, cur: psycopg2.extensions.cursor, events: Sequence[Envelope]) -> None:
        index = self.blind_index
        for event in events:
            self._apply(cur, event, index)

    def _apply(self, cur: psycopg2.extensions.cursor, event: Envelope, index: BlindIndex) -> None:
        p = event.payload
        tenant = str(p["tenant_id"])
        if event.type == "tenant_destroyed":
            cur.execute("DELETE FROM search_terms WHERE tenant_id = %s", (tenant,))
            return
        if event.type == "ticket_subject_changed":
            cur.execute(
                "DELETE FROM search_terms WHERE ticket_id = %s AND part = 'subject'",
                (p["ticket_id"],),
            )
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
            blob = _text_digests(index, tenant, text)
            if blob is None:
                return  # the tenant was destroyed: nothing of it is indexed
            if blob:
                cur.execute(_INSERT, {**row, "part": part, "digests": psycopg2.Binary(blob)})


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
