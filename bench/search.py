"""Section 9: search (issue 20): the platform's search of tickets against a plain PostgreSQL
full-text query over plaintext, in the same run, on the same server (the price of privacy).

    .venv/bin/python -m bench --only search    # 30,000 tickets in the tenant, 300,000 in all
    .venv/bin/python -m bench.search           # the issue's 100,000 and 1,000,000 (slow)

- Sizes: ``make bench`` runs ``BENCH``, a tenant of 30,000 tickets in a database of 300,000
  (``--quick``: 2,000 in 20,000); ``python -m bench.search`` runs the issue's 100,000 in
  1,000,000 (``ISSUE``, or ``--tenant`` and ``--database``), whose setup took 26 minutes on the
  shared 2 cores, far over the 10 the section may take in ``make bench``.
- The data: the tenant's text comes from a made-up vocabulary of 5,000 words drawn Zipf-like,
  the frequent words the short ones (as in a language, so the index holds a language's rows
  per word): a subject of 5-8 words, a body of 15-40, and on a quarter of the tickets 1-3
  messages of 10-30 words, a quarter of them internal notes. They are written through tickets'
  kernel (``Ticket``; ``PER_UNIT`` tickets a unit of work, ``WRITERS`` units at once), so the
  ``tickets`` rows, the tickets' keys and the ``search_terms`` rows are what the service holds.
  The rest of the database is 90 other tenants' tickets: copies in SQL of the tenant's
  ``tickets`` and ``search_terms`` rows under new ticket, requester and tenant ids, written
  with the two tables' indexes set aside and built again after (from their own definitions),
  then both tables vacuumed and analysed, as autovacuum would leave them at rest. Only the
  setup's writes wait for no disk flush (``synchronous_commit`` off): that is not measured.
- Ours: what the ``search_tickets`` RPC runs: the query loaded (``SearchTicketsV1``) and
  ``search.search_tickets`` in a unit of work, for an agent, a page of the default size.
- Baseline: ``plain_tickets`` in the same database: the same tickets' subject, body
  and messages in plaintext, a generated ``tsvector`` ('simple') with a GIN index (and the
  tenant's page index the tickets table has); the same words as ``to_tsquery`` prefixes
  (``word:*``) joined by ``|`` (ours also finds a ticket by any word, more words first), ranked
  by ``ts_rank``, the tenant's rows only, ``LIMIT`` the same page size.
- Queries: 300 (``--quick``: 60) of 1-3 words, a third each: words drawn Zipf-like from the
  vocabulary (frequent ones), words from its rarer three quarters drawn evenly, and prefixes
  of 3-4 letters of Zipf-drawn words. One at a time, ours and the baseline in turn (who goes first
  alternating), after 10 of each untimed. A query ours refuses (every word in more than
  ``search.MAX_ROWS_PER_WORD`` rows) is counted apart; the percentiles are of the others, for
  both. Where no word was left out, both must return as many tickets, or the run fails.
- Also: the size of ``search_terms`` (table and indexes) against the GIN index's, and the
  index rows per ticket against the tsvector's lexemes per ticket.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import json
import os
import random
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg2

from bench import report
from bench.harness import Context, Row, percentile
from bench.history import TICKETS_MIGRATIONS, tickets_store
from gateway.pagination import DEFAULT_LIMIT
from kernel.commands import load_command
from kernel.config import Settings
from kernel.errors import ValidationFailed
from kernel.stores import prepare_databases
from kernel.uow import EventSourcedStore
from services.tickets import commands, search
from services.tickets.domain import Ticket
from services.tickets.terms import MIN_LETTERS, query_terms

VOCABULARY = 5_000
TICKETS_PER_REQUESTER = 5
OTHER_TENANTS = 90
PER_UNIT = 50
WRITERS = 4
WARM_UP = 10
PLAIN_BATCH = 10_000
KINDS = ("frequent", "rare", "prefix")

# Made-up words are syllables: an onset, a vowel, now and then a coda.
_ONSETS = "b c d f g h j k l m n p r s t v w z br cl dr fl gr pl st tr ch sh th".split()
_VOWELS = "a e i o u ai ea ou".split()
_CODAS = ("", "", "", "n", "r", "s", "t", "l", "m", "nd", "st", "ck")


@dataclass(frozen=True)
class Text:
    """A ticket's words: its subject, its body, and its messages with their ``internal`` flag."""

    subject: str
    body: str
    messages: tuple[tuple[str, bool], ...]

    @property
    def message_text(self) -> str:
        return " ".join(body for body, _ in self.messages)


class Words:
    """A made-up vocabulary, ranked, and texts and queries drawn from it."""

    def __init__(self, rng: random.Random, size: int) -> None:
        seen: set[str] = set()
        while len(seen) < size:
            syllables = rng.choices((1, 2, 3, 4), weights=(3, 5, 3, 1))[0]
            seen.add(
                "".join(
                    rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
                    for _ in range(syllables)
                )
            )
        # The shorter the more frequent, loosely (the law of abbreviation).
        self.ranked = sorted(sorted(seen), key=lambda w: len(w) + rng.gauss(0, 2))
        self._cumulative = list(itertools.accumulate(1 / rank for rank in range(1, size + 1)))

    def draw(self, rng: random.Random, count: int) -> list[str]:
        """``count`` words, Zipf-like (the word of rank r in proportion to 1/r)."""
        return rng.choices(self.ranked, cum_weights=self._cumulative, k=count)

    def text(self, rng: random.Random) -> Text:
        messages: list[tuple[str, bool]] = []
        if rng.random() < 0.25:
            messages = [
                (" ".join(self.draw(rng, rng.randint(10, 30))), rng.random() < 0.25)
                for _ in range(rng.randint(1, 3))
            ]
        return Text(
            " ".join(self.draw(rng, rng.randint(5, 8))).capitalize(),
            " ".join(self.draw(rng, rng.randint(15, 40))) + ".",
            tuple(messages),
        )

    def query(self, rng: random.Random, kind: str) -> str:
        """1-3 words of ``kind``: Zipf-drawn (``frequent``), from the rarer three quarters of the
        vocabulary drawn evenly (``rare``), or the first 3-4 letters of Zipf-drawn words.

        How many is drawn again at each turn of the loop (a word taken or a word too short for
        its kind), so short queries are the commoner: of the issue size's 300, 139 have one
        word, 109 two and 52 three (138, 120 and 42 at make bench's size), the prefixes mostly
        one. Kept so, since the recorded runs (docs/performance.md) were drawn so."""
        searchable = [w for w in self.ranked if len(w) >= MIN_LETTERS]
        chosen: list[str] = []
        while len(chosen) < rng.randint(1, 3):
            if kind == "rare":
                chosen.append(rng.choice(searchable[len(searchable) // 4 :]))
                continue
            word = self.draw(rng, 1)[0]
            if kind == "frequent" and len(word) >= MIN_LETTERS:
                chosen.append(word)
            elif kind == "prefix" and len(word) >= 5:
                chosen.append(word[: rng.choice((3, 4))])
        return " ".join(chosen)


# --- the tenant's tickets, through the kernel ---------------------------------------------


def _write(
    store: EventSourcedStore,
    tenant: str,
    agent: str,
    texts: list[Text],
    requesters: list[str],
    ids: list[str],
    mine: list[int],
) -> None:
    """The tickets ``mine`` (indexes into ``texts``), ``PER_UNIT`` to a unit of work; each id
    goes into ``ids`` at its index."""
    for start in range(0, len(mine), PER_UNIT):
        with store.unit_of_work(agent) as uow:
            for i in mine[start : start + PER_UNIT]:
                text, requester = texts[i], requesters[i % len(requesters)]
                ticket = Ticket.create(
                    tenant_id=tenant,
                    requester_id=requester,
                    subject=text.subject,
                    body=text.body,
                    priority="normal",
                    tags=[],
                    redactions=0,
                )
                for n, (body, internal) in enumerate(text.messages):
                    # Internal notes are agents'; public messages alternate, requester first.
                    by_agent = internal or n % 2 == 1
                    ticket.add_message(
                        author_id=agent if by_agent else requester,
                        author_kind="agent" if by_agent else "requester",
                        body=body,
                        internal=internal,
                        redactions=0,
                    )
                uow.save(ticket, tenant)
                ids[i] = ticket.id


def write_tenant(store: EventSourcedStore, tenant: str, texts: list[Text]) -> list[str]:
    """The tenant's tickets through the kernel, ``WRITERS`` threads at once (each with
    requesters of its own: a requester's first ticket creates their key); their ids."""
    agent = str(uuid.uuid4())
    requesters = [str(uuid.uuid4()) for _ in range(max(1, len(texts) // TICKETS_PER_REQUESTER))]
    ids = [""] * len(texts)
    shares: list[list[int]] = [[] for _ in range(WRITERS)]
    for i in range(len(texts)):
        shares[(i % len(requesters)) % WRITERS].append(i)
    with ThreadPoolExecutor(WRITERS) as pool:
        done = [
            pool.submit(_write, store, tenant, agent, texts, requesters, ids, share)
            for share in shares
        ]
        for future in done:
            future.result()
    return ids


# --- the rest of the database, in SQL ------------------------------------------------------


@contextlib.contextmanager
def _indexes_aside(cur: psycopg2.extensions.cursor, table: str) -> Iterator[None]:
    """``table``'s indexes dropped for a bulk load and built again after it from their own
    definitions (as the migrations made them): one sort each, not a random insert per row."""
    cur.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = %s::regclass AND contype IN ('p', 'u')",
        (table,),
    )
    constraints = cur.fetchall()
    cur.execute(
        "SELECT indexname, indexdef FROM pg_indexes"
        " WHERE schemaname = current_schema() AND tablename = %s",
        (table,),
    )
    backing = {name for name, _ in constraints}
    indexes = [(name, made) for name, made in cur.fetchall() if name not in backing]
    for name, _ in indexes:
        cur.execute(f'DROP INDEX "{name}"')
    for name, _ in constraints:
        cur.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    yield
    for name, made in constraints:
        cur.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {made}')
    for _, made in indexes:
        cur.execute(made)


def _copy_to_other_tenants(cur: psycopg2.extensions.cursor, tenant: str, wanted: int) -> None:
    """``wanted`` tickets of other tenants: the tenant's tickets copied as many times as it
    takes, each copy spread over its share of ``OTHER_TENANTS`` (a tenth of them each for
    nine copies): ``tickets`` and ``search_terms`` rows as the tenant's, under a new ticket id,
    the copy's tenant and a requester of it. The words' digests are the tenant's: other
    tenants' would be other values of the same size, in parts of the index no search of this
    tenant reads."""
    cur.execute("SELECT count(*) FROM tickets WHERE tenant_id = %s", (tenant,))
    copies = -(-wanted // cur.fetchone()[0])
    others = [str(uuid.uuid4()) for _ in range(OTHER_TENANTS)]
    groups = max(1, OTHER_TENANTS // max(1, copies))
    cur.execute(
        """CREATE TEMP TABLE copies AS
           SELECT t.id AS old_id, gen_random_uuid() AS new_id,
                  (%(others)s::uuid[])[1 + (c * %(groups)s
                                            + (hashtext(t.id::text) & 2147483647) %% %(groups)s)
                                           %% %(tenants)s] AS tenant_id,
                  md5(t.requester_id::text || c)::uuid AS requester_id
             FROM tickets t, generate_series(0, %(copies)s - 1) AS c
            WHERE t.tenant_id = %(tenant)s
            ORDER BY c, t.id
            LIMIT %(wanted)s""",
        {
            "others": others,
            "groups": groups,
            "tenants": OTHER_TENANTS,
            "copies": copies,
            "tenant": tenant,
            "wanted": wanted,
        },
    )
    cur.execute(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = 'tickets'"
        " AND column_name NOT IN ('id', 'tenant_id', 'requester_id') ORDER BY ordinal_position"
    )
    rest = [name for (name,) in cur.fetchall()]
    with _indexes_aside(cur, "tickets"):
        cur.execute(
            f"INSERT INTO tickets (id, tenant_id, requester_id, {', '.join(rest)})"
            f" SELECT c.new_id, c.tenant_id, c.requester_id, {', '.join('t.' + r for r in rest)}"
            "   FROM tickets t JOIN copies c ON c.old_id = t.id"
        )
    with _indexes_aside(cur, "search_terms"):
        cur.execute(
            """INSERT INTO search_terms (ticket_id, tenant_id, requester_id, author_id, part,
                                         message_id, internal, digest)
               SELECT c.new_id, c.tenant_id, c.requester_id, s.author_id, s.part,
                      s.message_id, s.internal, s.digest
                 FROM search_terms s JOIN copies c ON c.old_id = s.ticket_id"""
        )


# --- the baseline: plaintext and PostgreSQL's full-text search -----------------------------

_PLAIN_TABLE = """
CREATE TABLE plain_tickets (
    id          uuid NOT NULL,
    tenant_id   uuid NOT NULL,
    created_at  timestamptz NOT NULL,
    subject     text NOT NULL,
    body        text NOT NULL,
    messages    text NOT NULL,
    document    tsvector GENERATED ALWAYS AS
                  (to_tsvector('simple', subject || ' ' || body || ' ' || messages)) STORED
)
"""
_PLAIN_INDEXES = (
    "ALTER TABLE plain_tickets ADD PRIMARY KEY (id)",
    "CREATE INDEX plain_tickets_page ON plain_tickets (tenant_id, created_at, id)",
    "CREATE INDEX plain_tickets_words ON plain_tickets USING gin (document)",
)
_PLAIN_SEARCH = """
SELECT id, subject, body, ts_rank(document, query) AS rank
  FROM plain_tickets, to_tsquery('simple', %(query)s) AS query
 WHERE tenant_id = %(tenant)s AND document @@ query
 ORDER BY rank DESC, created_at DESC, id DESC
 LIMIT %(limit)s
"""


def load_plain(cur: psycopg2.extensions.cursor, ids: list[str], texts: list[Text]) -> None:
    """``plain_tickets``: the tenant's tickets (their tenant and creation time as ``tickets``
    has them), then every copy ``copies`` made of them with the copy's id and tenant."""
    cur.execute(_PLAIN_TABLE)
    # In batches of JSON, not COPY: psycopg2 refuses COPY where eventlet waits for it (tests).
    for start in range(0, len(ids), PLAIN_BATCH):
        part = slice(start, start + PLAIN_BATCH)
        batch = [
            {"id": i, "subject": t.subject, "body": t.body, "messages": t.message_text}
            for i, t in zip(ids[part], texts[part], strict=True)
        ]
        cur.execute(
            """INSERT INTO plain_tickets (id, tenant_id, created_at, subject, body, messages)
               SELECT t.id, t.tenant_id, t.created_at, x.subject, x.body, x.messages
                 FROM json_to_recordset(%s::json)
                        AS x (id uuid, subject text, body text, messages text)
                 JOIN tickets t ON t.id = x.id""",
            (json.dumps(batch),),
        )
    cur.execute(
        """INSERT INTO plain_tickets (id, tenant_id, created_at, subject, body, messages)
           SELECT c.new_id, c.tenant_id, p.created_at, p.subject, p.body, p.messages
             FROM plain_tickets p JOIN copies c ON c.old_id = p.id"""
    )
    for statement in _PLAIN_INDEXES:
        cur.execute(statement)


def plain_query(q: str) -> str:
    """The baseline's ``to_tsquery`` text of ``q``: each of the words ours searches by, as a
    prefix (``'word':*``), any of them (``|``)."""
    return " | ".join("'" + term.replace("'", "''") + "':*" for term in query_terms(q))


# --- the run ------------------------------------------------------------------------------


@dataclass
class Measured:
    kind: str
    ours_ms: float
    plain_ms: float
    refused: bool
    left_out: int


def our_search(store: EventSourcedStore, actor: dict[str, str], q: str) -> tuple[float, Any]:
    """Milliseconds of one search as the RPC runs it, and its answer (None when refused)."""
    began = time.perf_counter()
    try:
        loaded = load_command(commands.SearchTicketsV1, {"q": q})
        with store.unit_of_work(actor["agent_id"]) as uow:
            answer: Any = search.search_tickets(uow, actor, loaded, DEFAULT_LIMIT, None)
    except ValidationFailed:
        answer = None
    return (time.perf_counter() - began) * 1000, answer


def plain_search(store: EventSourcedStore, tenant: str, q: str) -> tuple[float, list[tuple]]:
    began = time.perf_counter()
    with store.db.transaction() as cur:
        cur.execute(
            _PLAIN_SEARCH, {"query": plain_query(q), "tenant": tenant, "limit": DEFAULT_LIMIT}
        )
        rows = cur.fetchall()
    return (time.perf_counter() - began) * 1000, rows


def measure(
    store: EventSourcedStore, tenant: str, queries: list[tuple[str, str]]
) -> list[Measured]:
    actor = {"tenant_id": tenant, "agent_id": str(uuid.uuid4()), "role": "agent"}
    for _, q in queries[:WARM_UP]:
        our_search(store, actor, q)
        plain_search(store, tenant, q)
    measured = []
    for n, (kind, q) in enumerate(queries[WARM_UP:]):
        ours_ms = plain_ms = 0.0
        answer: Any = None
        rows: list[tuple] = []
        for step in ("ours", "plain") if n % 2 == 0 else ("plain", "ours"):
            if step == "ours":
                ours_ms, answer = our_search(store, actor, q)
            else:
                plain_ms, rows = plain_search(store, tenant, q)
        left_out = 0 if answer is None else answer["terms_left_out"]
        # Both find a ticket by any of the words, by the same prefixes: with no word left
        # out, a page of each holds as many tickets (all there are, up to the page size).
        if answer is not None and not left_out and len(answer["items"]) != len(rows):
            raise AssertionError(
                f"query {n} ({kind}): ours found {len(answer['items'])} tickets,"
                f" the plain query {len(rows)}"
            )
        measured.append(Measured(kind, ours_ms, plain_ms, answer is None, left_out))
    return measured


@dataclass
class Built:
    """The section's database, as the setup left it."""

    store: EventSourcedStore
    tenant: str
    in_database: int
    tenant_rows: int  # the tenant's rows in search_terms
    lexemes: float  # the tenant's distinct words per ticket in the tsvector
    sizes: dict[str, int]  # bytes
    seconds: dict[str, float]  # of each step of the setup


def _setting(settings: Settings, databases: list[str], value: str) -> None:
    """``synchronous_commit`` of the world's ``databases``, for the connections opened after."""
    conn = psycopg2.connect(settings.database_url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for name in databases:
                cur.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = {value}')
    finally:
        conn.close()


def _sizes(cur: psycopg2.extensions.cursor) -> dict[str, int]:
    cur.execute(
        """SELECT pg_relation_size('search_terms'), pg_indexes_size('search_terms'),
                  pg_relation_size('search_terms_find'), pg_relation_size('plain_tickets_words'),
                  pg_total_relation_size('plain_tickets')"""
    )
    names = ("table", "indexes", "find", "gin", "plain")
    return dict(zip(names, cur.fetchone(), strict=True))


def _progress(message: str) -> None:
    print(f"search: {message}", file=sys.stderr, flush=True)


def build(settings: Settings, texts: list[Text], database_tickets: int) -> Built:
    """``settings``' world with the tenant's ``texts`` written through the kernel, its copies
    for the other tenants up to ``database_tickets``, and the baseline's table."""
    prepare_databases(settings, "tickets", TICKETS_MIGRATIONS)
    databases = [settings.database_name("tickets"), settings.database_name("tickets", "keys")]
    # The setup's commits wait for no flush to disk: what they write is the same.
    _setting(settings, databases, "off")
    store = tickets_store(settings, prepare=False)
    tenant = str(uuid.uuid4())
    seconds: dict[str, float] = {}

    _progress(f"{len(texts):,} tickets through the kernel ...")
    began = time.perf_counter()
    ids = write_tenant(store, tenant, texts)
    seconds["kernel"] = time.perf_counter() - began
    conn = psycopg2.connect(settings.database_dsn("tickets"))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            # For the index builds: the machine has memory to spare, not cores.
            cur.execute("SET maintenance_work_mem = '1GB'")
            cur.execute("SELECT pg_relation_size('search_terms'), pg_indexes_size('search_terms')")
            alone = cur.fetchone()
            _progress(f"copies up to {database_tickets:,} tickets ...")
            began = time.perf_counter()
            _copy_to_other_tenants(cur, tenant, database_tickets - len(texts))
            seconds["copies"] = time.perf_counter() - began
            _progress("the plaintext table and its GIN index ...")
            began = time.perf_counter()
            load_plain(cur, ids, texts)
            seconds["plain"] = time.perf_counter() - began
            began = time.perf_counter()
            for table in ("tickets", "search_terms", "plain_tickets"):
                cur.execute(f"VACUUM ANALYZE {table}")
            seconds["vacuum"] = time.perf_counter() - began
            cur.execute("SELECT count(*) FROM tickets")
            in_database = cur.fetchone()[0]
            cur.execute(
                "SELECT count(*), avg(length(document)) FILTER (WHERE tenant_id = %s)"
                " FROM plain_tickets",
                (tenant,),
            )
            plain_count, lexemes = cur.fetchone()
            cur.execute("SELECT count(*) FROM search_terms WHERE tenant_id = %s", (tenant,))
            tenant_rows = cur.fetchone()[0]
            sizes = {**_sizes(cur), "alone_table": alone[0], "alone_indexes": alone[1]}
    finally:
        conn.close()
    _setting(settings, databases, "on")
    if not in_database == plain_count == database_tickets:
        raise AssertionError(f"{in_database} tickets, {plain_count} plain, not {database_tickets}")
    return Built(store, tenant, in_database, tenant_rows, float(lexemes), sizes, seconds)


@dataclass(frozen=True)
class Size:
    tenant: int  # tickets in the measured tenant
    database: int  # tickets in the database, the tenant's among them
    queries: int

    def texts_and_queries(self) -> tuple[list[Text], list[tuple[str, str]]]:
        """The tenant's texts and the queries (kind, words), the same in every run."""
        rng = random.Random(20)
        words = Words(rng, VOCABULARY)
        texts = [words.text(rng) for _ in range(self.tenant)]
        kinds = itertools.islice(itertools.cycle(KINDS), WARM_UP + self.queries)
        return texts, [(kind, words.query(rng, kind)) for kind in kinds]


QUICK = Size(2_000, 20_000, 60)
# What ``make bench`` runs: the issue's size (``ISSUE``) took 26 minutes to set up on the
# shared 2 cores (docs/performance.md), most of it the tenant's tickets through the kernel and
# the index builds over 91 million rows; this one takes about a third of that.
BENCH = Size(30_000, 300_000, 300)
ISSUE = Size(100_000, 1_000_000, 300)


def run(ctx: Context, sections: set[str], size: Size | None = None) -> list[Row]:
    size = size or (QUICK if ctx.quick else BENCH)
    texts, queries = size.texts_and_queries()
    load_before = os.getloadavg()[0]
    built = build(ctx.world(LEDGERDESK_KEY_CACHE_SECONDS="30"), texts, size.database)
    _progress(f"{size.queries} queries, each both ways ...")
    measured = measure(built.store, built.tenant, queries)
    return rows(built, measured, size.tenant, load_before)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.search``: the section at the issue's size (100,000 tickets in the
    tenant, 1,000,000 in the database), or another; the table, record and chart as
    ``python -m bench`` writes them."""
    from bench.__main__ import RESULTS
    from bench.__main__ import run as run_sections

    parser = argparse.ArgumentParser(prog="python -m bench.search", description=main.__doc__)
    parser.add_argument("--tenant", type=int, default=ISSUE.tenant, help="tickets in the tenant")
    parser.add_argument("--database", type=int, default=ISSUE.database, help="in all")
    parser.add_argument("--queries", type=int, default=ISSUE.queries)
    parser.add_argument("--out", type=Path, default=RESULTS, help="where results are written")
    args = parser.parse_args(argv)
    if args.database < args.tenant:
        parser.error("the database holds the tenant's tickets: --database >= --tenant")
    size = Size(args.tenant, args.database, args.queries)
    record, found = run_sections(
        {"search"},
        quick=False,
        out=args.out,
        runners=[({"search"}, functools.partial(run, size=size))],
    )
    print(report.table(found))
    print(f"\nwritten: {record['json']} and {record['png']} ({record['seconds']} s)")
    return 1 if record["failures"] else 0


def rows(built: Built, measured: list[Measured], tenant_tickets: int, load: float) -> list[Row]:
    answered = [m for m in measured if not m.refused]
    refused = [m for m in measured if m.refused]
    partial = sum(1 for m in answered if m.left_out)
    where = (
        f"{tenant_tickets:,} tickets in the tenant, {built.in_database:,} in the database;"
        f" {len(answered)} of {len(measured)} queries answered ({partial} with a word left out,"
        f" {len(refused)} refused)"
    )
    seconds = built.seconds
    setup = (
        f"setup {sum(seconds.values()):.0f} s: kernel {seconds['kernel']:.0f} s"
        f" ({tenant_tickets / seconds['kernel']:,.0f} tickets/s), copies"
        f" {seconds['copies']:.0f} s, plain {seconds['plain']:.0f} s, vacuum"
        f" {seconds['vacuum']:.0f} s; load average {load:.1f} before, {os.getloadavg()[0]:.1f}"
        " after"
    )
    if refused:
        setup += (
            f"; refused queries: ours p50 {percentile([m.ours_ms for m in refused], 50):.1f} ms,"
            f" the plain one {percentile([m.plain_ms for m in refused], 50):.1f} ms"
        )
    baseline = "PostgreSQL full text over plaintext: tsvector + GIN, ts_rank"
    found = [
        Row(
            "search",
            f"search p{q}",
            percentile([m.ours_ms for m in answered], q),
            "ms",
            percentile([m.plain_ms for m in answered], q),
            baseline,
            note=where + ("; " + setup if q == 50 else ""),
        )
        for q in (50, 99)
    ]
    for kind in KINDS:
        of_kind = [m for m in answered if m.kind == kind]
        ours, plain = [m.ours_ms for m in of_kind], [m.plain_ms for m in of_kind]
        found.append(
            Row(
                "search",
                "search p50, prefixes" if kind == "prefix" else f"search p50, {kind} words",
                percentile(ours, 50),
                "ms",
                percentile(plain, 50),
                baseline,
                note=f"{len(of_kind)} queries; p99 {percentile(ours, 99):.1f}"
                f" / {percentile(plain, 99):.1f} ms",
            )
        )
    mb = {name: size / 1024 / 1024 for name, size in built.sizes.items()}
    found.append(
        Row(
            "search",
            "index size",
            mb["table"] + mb["indexes"],
            "MB",
            mb["gin"],
            "the GIN index of the plaintext",
            note=f"search_terms {mb['table']:,.0f} MB + its indexes {mb['indexes']:,.0f} MB"
            f" (search_terms_find {mb['find']:,.0f} MB); the tenant's rows alone as the kernel"
            f" wrote them {mb['alone_table']:,.0f} + {mb['alone_indexes']:,.0f} MB; the whole"
            f" plaintext table with its indexes {mb['plain']:,.0f} MB",
        )
    )
    found.append(
        Row(
            "search",
            "index rows per ticket",
            built.tenant_rows / tenant_tickets,
            "rows",
            built.lexemes,
            "the tsvector's distinct words per ticket",
            note="a row per prefix of 3-16 letters of each word, in each part (subject, body,"
            " each message)",
        )
    )
    return found


if __name__ == "__main__":
    sys.exit(main())
