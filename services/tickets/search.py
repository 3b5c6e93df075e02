"""Search: the caller's tenant's tickets whose words match a query's, ranked.

The query's words (``terms.query_terms``) are hashed under the tenant's search key and looked up
in ``search_terms`` (``search_index``); the query itself goes nowhere else: no event, no log line,
no span attribute, no error text quotes it. The gateway's access record of the answer names the
tickets it returned (and their people), as for any list.

Results are ranked by how many of the query's words a ticket matches, then newest first, and
paged by a keyset on exactly that order. Internal notes count only for a caller who may read
them (``NOTE_READERS``). What one search may cost is bounded: at most ``MAX_QUERY_WORDS`` words,
and at most ``MAX_ROWS_PER_WORD`` index rows examined for each; a word found in more rows than
that is too common to rank by and is left out (the answer says how many were), and a query of
only such words is refused.
"""

from __future__ import annotations

from typing import Any

import psycopg2

from kernel.crypto.blind_index import BlindIndex
from kernel.errors import ValidationFailed
from kernel.uow import UnitOfWork
from services.tickets.handlers import _TICKET_COLUMNS, _stored_words, _ticket_row
from services.tickets.search_index import digests
from services.tickets.terms import query_terms

# Who reads internal notes: staff, as ``handlers.get_ticket`` shows them every message. The
# search route admits only them today; a role added later (a requester's portal, say) matches
# public words only unless it is named here.
NOTE_READERS = frozenset({"admin", "agent"})
MAX_ROWS_PER_WORD = 20_000

_PUBLIC_ONLY = " AND NOT internal"

# How many rows each digest has, counted no further than the cap (an index-only scan each).
_COUNTS = """
SELECT d, (SELECT count(*) FROM (SELECT 1 FROM search_terms
                                  WHERE tenant_id = %(tenant)s AND digest = d{visible}
                                  LIMIT %(cap)s) AS examined)
  FROM unnest(%(digests)s::bytea[]) AS d
"""

_RANKED = f"""
WITH matched AS (
  SELECT ticket_id, count(DISTINCT digest) AS hits
    FROM search_terms
   WHERE tenant_id = %(tenant)s AND digest = ANY(%(digests)s::bytea[]){{visible}}
   GROUP BY ticket_id)
SELECT matched.hits, {_TICKET_COLUMNS}
  FROM matched JOIN tickets ON tickets.id = matched.ticket_id
 WHERE tickets.tenant_id = %(tenant)s{{filters}}
 ORDER BY matched.hits DESC, tickets.created_at DESC, tickets.id DESC
 LIMIT %(limit)s
"""


def search_tickets(
    uow: UnitOfWork,
    actor: dict[str, Any],
    query: dict[str, Any],
    limit: int,
    after: list | None,
) -> dict[str, Any]:
    """A page of the tickets that match ``query`` (``SearchTicketsV1``, loaded), after the
    position ``after`` (``[hits, created_at, id]`` of the last ticket of the page before).

    Returns ``items`` (tickets as the list shows them, with ``matched_terms``), ``next`` (the
    position of the last, or None on the last page) and ``terms_left_out``."""
    tenant = actor["tenant_id"]
    wanted = digests(BlindIndex(uow.cipher.keystore), tenant, query_terms(query["q"]), create=False)
    if wanted is None:
        # No key: the tenant never wrote a ticket, or was destroyed. Nothing is indexed.
        return {"items": [], "next": None, "terms_left_out": 0}
    visible = "" if actor.get("role") in NOTE_READERS else _PUBLIC_ONLY
    params: dict[str, Any] = {
        "tenant": tenant,
        "cap": MAX_ROWS_PER_WORD + 1,
        "digests": [psycopg2.Binary(d) for d in wanted],
    }
    uow.cur.execute(_COUNTS.format(visible=visible), params)
    usable = [bytes(d) for d, rows in uow.cur.fetchall() if rows <= MAX_ROWS_PER_WORD]
    left_out = len(wanted) - len(usable)
    if not usable:
        raise ValidationFailed(
            {"q": ["every word is too common to search by: add a rarer word, or more letters"]}
        )
    filters = ""
    params.update(digests=[psycopg2.Binary(d) for d in usable], limit=limit + 1)
    if query.get("status"):
        filters += " AND tickets.status = %(status)s"
        params["status"] = query["status"]
    if after:
        filters += (
            " AND (matched.hits, tickets.created_at, tickets.id)"
            " < (%(hits)s, %(created)s::timestamptz, %(id)s::uuid)"
        )
        params.update(hits=int(after[0]), created=after[1], id=after[2])
    uow.cur.execute(_RANKED.format(visible=visible, filters=filters), params)
    rows = uow.cur.fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    # One keystore round trip for the page: each ticket's words are under a key of its own.
    words = uow.cipher.open_stored_rows(tenant, [_stored_words(r[1:]) for r in rows])
    items = [
        {**_ticket_row(row[1:], opened), "matched_terms": row[0]}
        for row, opened in zip(rows, words, strict=True)
    ]
    last = rows[-1] if more and rows else None
    position = None if last is None else [str(last[0]), last[9].isoformat(), str(last[1])]
    return {"items": items, "next": position, "terms_left_out": left_out}
