"""The data map: every place Ledgerdesk keeps data, what it holds, how, and what ends it.

Each service declares its tables, the free-text fields of its events and what its queues carry
next to its migrations (``services/<name>/datamap.py``); this module declares what the kernel
itself creates in every service's databases (event store, outbox, inbox, keystore), the queues
every service has, and the fields of log lines and spans. The declarations are checked against
what exists, so they cannot drift from it:

- ``undeclared_columns`` against a database's live schema (``information_schema``), after its
  migrations: a column nobody declared is a copy nobody promised to end;
- ``unended`` for personal data held in plaintext that no erasure, destruction, period or hold
  ends, or whose declared end names code that never mentions the table;
- ``undeclared_event_fields`` for every version of every event type: a field is personal and
  encrypted (``personal_fields`` under the subject's key, ``tenant_fields`` under the tenant's),
  an id or a value of a closed set (read from its marshmallow field), or declared here. Events
  are append-only, so a personal field in plaintext there could never be erased.

``render`` writes the whole map as Markdown (``docs/data-map.md``, by ``python -m
services.datamap``), a test keeps that file current, and the whole-store sweep in the tests
proves the ends empirically: after an erasure, an expiry and a destruction no byte of the
planted data is left anywhere but under a legal hold.
"""

from __future__ import annotations

import enum
import fnmatch
import importlib
import inspect
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from marshmallow import Schema, fields, validate

from kernel.envelope import EventRegistry, EventType


class Category(enum.StrEnum):
    PERSONAL = "personal"
    PSEUDONYMOUS = "pseudonymous id"
    SECRET = "secret"
    OPERATIONAL = "operational"


class Held(enum.StrEnum):
    PLAINTEXT = "plaintext"
    SUBJECT_KEY = "under the subject's key"
    TENANT_KEY = "under the tenant's key"
    PERIOD_KEY = "under a period key"
    KEYED_HASH = "keyed hash"
    WRAPPED = "wrapped by the key above it"


class When(enum.StrEnum):
    ERASURE = "erasure of the subject"
    DESTRUCTION = "the tenant's destruction"
    PERIOD = "a retention period"
    LEGAL_HOLD = "the end of a legal hold"
    PUBLICATION = "its publication"
    CONSUMED = "its consumption"
    TTL = "a time to live"
    REPLACED = "a newer value"
    RETIRED = "retired: no longer written"
    KEPT = "kept"


# What actually ends personal data: the others only move it on or say it stays.
_FORGETTING = (
    When.ERASURE,
    When.DESTRUCTION,
    When.PERIOD,
    When.LEGAL_HOLD,
    When.TTL,
    When.RETIRED,
)


@dataclass(frozen=True)
class End:
    """One thing that ends a copy: when, how, and the module whose code does it (checked to
    name the table it ends, so a declaration cannot point at code that never touches it)."""

    when: When
    how: str
    by: str = ""

    def describe(self) -> str:
        return f"{self.when.value}: {self.how}" + (f" (`{self.by}`)" if self.by else "")


@dataclass(frozen=True)
class Column:
    name: str
    category: Category
    held: Held = Held.PLAINTEXT
    ends: tuple[End, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class Table:
    name: str
    holds: str
    columns: tuple[Column, ...]
    # What ends a row as a whole (a column's own ends come on top).
    ends: tuple[End, ...] = ()

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)


@dataclass(frozen=True)
class Queue:
    """A queue, or every queue whose name matches ``pattern`` (fnmatch, ``{service}`` filled)."""

    pattern: str
    holds: str
    category: Category
    held: Held
    ends: tuple[End, ...]


@dataclass(frozen=True)
class Field:
    """A field of a log line or an attribute of a span."""

    name: str
    holds: str
    category: Category = Category.OPERATIONAL


@dataclass(frozen=True)
class ServiceMap:
    """What one service keeps: its tables (beyond the kernel's), the plaintext free-text fields
    of its events, and what its event types are."""

    service: str
    summary: str
    tables: tuple[Table, ...] = ()
    key_tables: tuple[Table, ...] = ()
    # Event types the service stores (append-only: nothing personal may be in plaintext).
    registries: tuple[EventRegistry, ...] = ()
    # Message types it publishes without storing (their copies end with the outbox row and the
    # queue's consumption): personal plaintext is allowed there when declared.
    messages: tuple[EventRegistry, ...] = ()
    # event type -> field (dotted for nested) -> what it is, for fields not classified by type.
    event_fields: Mapping[str, Mapping[str, Column]] = field(default_factory=dict)
    queues: tuple[Queue, ...] = ()

    def database_tables(self, purpose: str = "") -> tuple[Table, ...]:
        if purpose == "keys":
            return KEYSTORE_TABLES + self.key_tables
        return STORE_TABLES + self.tables


# --- shorthands for declarations -------------------------------------------------------------


def pseudonym(name: str, note: str = "") -> Column:
    return Column(name, Category.PSEUDONYMOUS, note=note)


def operational(name: str, note: str = "") -> Column:
    return Column(name, Category.OPERATIONAL, note=note)


def personal(name: str, held: Held, *ends: End, note: str = "") -> Column:
    return Column(name, Category.PERSONAL, held, tuple(ends), note)


def secret(name: str, held: Held, *ends: End, note: str = "") -> Column:
    return Column(name, Category.SECRET, held, tuple(ends), note)


# --- what the kernel creates in every service's databases ------------------------------------

_STORE = "kernel.uow"
_RELAY = "kernel.relay"
_KEYSTORE = "kernel.crypto"

SHREDDED_WITH_SUBJECT = End(When.ERASURE, "the subject's key is shredded", _KEYSTORE)
SHREDDED_WITH_TENANT = End(When.DESTRUCTION, "the tenant's key is shredded", _KEYSTORE)
MIGRATIONS_TABLE = Table(
    "schema_migrations",
    "which migration files were applied, and their checksums",
    (
        operational("component"),
        operational("name"),
        operational("checksum"),
        operational("applied_at"),
    ),
    ends=(End(When.KEPT, "for the life of the database"),),
)

STORE_TABLES: tuple[Table, ...] = (
    Table(
        "events",
        "the service's event store: every event it recorded, append-only (triggers refuse"
        " UPDATE, DELETE and TRUNCATE); payload fields per event type below",
        (
            operational("position"),
            pseudonym("event_id"),
            pseudonym("stream_id", "aggregate kind and id"),
            operational("stream_version"),
            operational("type"),
            operational("source"),
            operational("schema_version"),
            pseudonym("tenant_id"),
            operational("occurred_at"),
            pseudonym("actor_id", "the agent, service or operator that acted"),
            operational("trace", "W3C trace context"),
            Column(
                "payload",
                Category.PERSONAL,
                Held.SUBJECT_KEY,
                (SHREDDED_WITH_SUBJECT, SHREDDED_WITH_TENANT),
                "personal fields under the subject's key, tenant fields under the tenant's;"
                " see the event fields",
            ),
            operational("metadata", "the tenant's region"),
        ),
        ends=(End(When.KEPT, "append-only history; what is erased reads as erased"),),
    ),
    Table(
        "outbox",
        "messages waiting for the relay: published copies of events (no personal or tenant"
        " fields), commands and answers; an access event's IP and user agent until published",
        (
            operational("id"),
            pseudonym("event_id"),
            pseudonym("stream_id"),
            operational("exchange"),
            operational("routing_key"),
            Column(
                "body",
                Category.PERSONAL,
                Held.PLAINTEXT,
                (
                    End(
                        When.PUBLICATION,
                        "the relay deletes the row once the broker confirmed it",
                        _RELAY,
                    ),
                ),
                "the envelope as published",
            ),
            operational("created_at"),
            operational("published_at", "no longer written; dropped in the next release"),
            operational("attempts"),
            operational("last_error", "why the broker refused it; ids and routing keys only"),
        ),
        ends=(End(When.PUBLICATION, "deleted once the broker confirmed it", _RELAY),),
    ),
    Table(
        "inbox",
        "which message each consumer has handled, so a redelivery has no second effect",
        (operational("consumer"), pseudonym("message_id"), operational("handled_at")),
        ends=(End(When.KEPT, "ids only"),),
    ),
    Table(
        "projection_state",
        "how far each read model was rebuilt",
        (operational("name"), operational("position"), operational("rebuilt_at")),
        ends=(End(When.KEPT, "no data of anyone"),),
    ),
    MIGRATIONS_TABLE,
)

KEYSTORE_TABLES: tuple[Table, ...] = (
    Table(
        "tenant_keys",
        "one key per tenant, wrapped by a master key from configuration",
        (
            pseudonym("tenant_id"),
            operational("master_key_id"),
            secret(
                "wrapped_key",
                Held.WRAPPED,
                End(When.DESTRUCTION, "set to NULL: a tombstone", _KEYSTORE),
            ),
            operational("created_at"),
            operational("shredded_at"),
        ),
        ends=(End(When.KEPT, "a tombstone after shredding, so no new key is made"),),
    ),
    Table(
        "subject_keys",
        "one key per subject (person, ticket, period), wrapped by its tenant's or parent's key",
        (
            pseudonym("subject_id"),
            pseudonym("tenant_id"),
            secret(
                "wrapped_key",
                Held.WRAPPED,
                End(When.ERASURE, "set to NULL: a tombstone", _KEYSTORE),
                End(When.DESTRUCTION, "its tenant's key is shredded", _KEYSTORE),
            ),
            operational("created_at"),
            operational("shredded_at"),
            pseudonym("parent_id"),
        ),
        ends=(End(When.KEPT, "a tombstone after shredding, so no new key is made"),),
    ),
    MIGRATIONS_TABLE,
)

# Every service has these, besides the consumer queues its subscriptions declare.
SERVICE_QUEUES: tuple[Queue, ...] = (
    Queue(
        "rpc-{service}",
        "RPC requests to the service: arguments may hold what a client sent (a new contact's"
        " name, a ticket's text)",
        Category.PERSONAL,
        Held.PLAINTEXT,
        (End(When.CONSUMED, "acknowledged once answered"),),
    ),
    Queue(
        "rpc-{service}.dead",
        "requests the service could not serve: reason, method, correlation id and size; the"
        " body is dropped",
        Category.OPERATIONAL,
        Held.PLAINTEXT,
        (End(When.TTL, "LEDGERDESK_DEAD_LETTER_TTL_HOURS (48), and a length limit"),),
    ),
    Queue(
        "rpc.reply-*",
        "RPC answers on their way back to a caller: what the caller asked for",
        Category.PERSONAL,
        Held.PLAINTEXT,
        (End(When.CONSUMED, "consumed by the caller; the queue ends with its connection"),),
    ),
)

# Queues that live for the moment a dead-letter or RPC queue is replaced (kernel.topology).
TRANSIENT_QUEUES: tuple[Queue, ...] = (
    Queue(
        "*.migrating",
        "dead letters or requests held while their queue is replaced with new arguments",
        Category.PERSONAL,
        Held.PLAINTEXT,
        (End(When.CONSUMED, "moved back by the same or the next prepare"),),
    ),
    Queue(
        "*.replacing",
        "nothing: an exclusive queue that is the lock of a replacement",
        Category.OPERATIONAL,
        Held.PLAINTEXT,
        (End(When.CONSUMED, "deleted with its connection"),),
    ),
)


def subscription_queues(subscriptions: Iterable[Any]) -> tuple[Queue, ...]:
    """Each consumer queue (``kernel.topology.Subscription``) and its dead-letter queue: what
    they hold is the published events they are bound to."""
    queues: list[Queue] = []
    for subscription in subscriptions:
        bound = ", ".join(subscription.bindings)
        queues.append(
            Queue(
                subscription.queue,
                f"published events ({bound}): ids and states; an access event's IP address"
                " and user agent, for the ledger",
                Category.PERSONAL,
                Held.PLAINTEXT,
                (End(When.CONSUMED, "acknowledged once handled"),),
            )
        )
        queues.append(
            Queue(
                subscription.dead_letter_queue,
                f"what {subscription.queue} could not handle, as published",
                Category.PERSONAL,
                Held.PLAINTEXT,
                (
                    End(
                        When.TTL,
                        "LEDGERDESK_DEAD_LETTER_TTL_HOURS (48), oldest dropped past"
                        " LEDGERDESK_DEAD_LETTER_MAX_MESSAGES",
                    ),
                ),
            )
        )
    return tuple(queues)


LOG_FIELDS: tuple[Field, ...] = (
    Field("time", "when the line was written"),
    Field("level", "DEBUG, INFO, WARNING, ERROR"),
    Field("service", "the process's service"),
    Field("logger", "the Python module that wrote it"),
    Field("message", "the kernel's own words: ids, types, counts, routes; never a body"),
    Field("trace_id", "the current span's trace"),
    Field("span_id", "the current span"),
    Field("error", "an exception's type (its text may quote data, so it is not logged)"),
    Field("frames", "an exception's stack frames: file, line, code"),
)

SPAN_ATTRIBUTES: tuple[Field, ...] = (
    Field("nameko.service", "the service a worker ran in"),
    Field("nameko.method", "the entrypoint's method"),
    Field("nameko.entrypoint", "the entrypoint's kind"),
    Field("nameko.call_id", "nameko's id of the call"),
    Field("exception.type", "an error's type"),
    Field(
        "exception.message", "an error's text, e-mail addresses, bearer keys and secrets redacted"
    ),
    Field("exception.stacktrace", "an error's traceback, redacted the same way"),
    Field("exception.escaped", "OpenTelemetry's flag on exception events"),
    Field("service.name", "resource: the process's service"),
    Field("service.instance.id", "resource: a random id of the process"),
    Field("telemetry.sdk.language", "resource: the SDK's language"),
    Field("telemetry.sdk.name", "resource: the SDK's name"),
    Field("telemetry.sdk.version", "resource: the SDK's version"),
)


# --- checks ----------------------------------------------------------------------------------


def undeclared_columns(tables: Iterable[Table], live: Mapping[str, Iterable[str]]) -> list[str]:
    """``table.column`` for every live column (``live``: table -> columns) not declared, and
    every declared table or column that does not exist (a declaration of nothing)."""
    declared = {t.name: {c.name for c in t.columns} for t in tables}
    problems: list[str] = []
    for table, columns in sorted(live.items()):
        if table not in declared:
            problems.extend(f"{table}.{c} (undeclared table)" for c in sorted(columns))
            continue
        problems.extend(f"{table}.{c}" for c in sorted(set(columns) - declared[table]))
    for table, columns in sorted(declared.items()):
        present = set(live.get(table, ()))
        if table not in live:
            problems.append(f"{table} (declared, but no such table)")
            continue
        problems.extend(
            f"{table}.{c} (declared, but no such column)" for c in sorted(columns - present)
        )
    return problems


def _source_names(by: str, word: str) -> bool:
    """Whether the code ``by`` names (a module, or a migration file by its path from the
    project's root) mentions ``word``."""
    try:
        if by.endswith(".sql"):
            source = (Path(__file__).resolve().parent.parent / by).read_text()
        else:
            source = inspect.getsource(importlib.import_module(by))
    except (ImportError, OSError, TypeError):
        return False
    return word in source


def unended(tables: Iterable[Table]) -> list[str]:
    """Personal data no declared end reaches: a personal or secret column with nothing that
    forgets it, or held in plaintext with an end whose code never names its table."""
    problems = []
    for table in tables:
        for column in table.columns:
            if column.category not in (Category.PERSONAL, Category.SECRET):
                continue
            ends = column.ends + table.ends
            where = f"{table.name}.{column.name}"
            if not any(e.when in _FORGETTING or e.when is When.PUBLICATION for e in ends):
                problems.append(f"{where}: {column.category.value} data that nothing ends")
                continue
            if column.held is not Held.PLAINTEXT:
                continue
            for end in ends:
                if end.when in _FORGETTING + (When.PUBLICATION,) and not end.by:
                    problems.append(f"{where}: ends by {end.when.value} but names no code")
                elif end.by and not _source_names(end.by, table.name):
                    problems.append(f"{where}: {end.by} never names table {table.name}")
    return problems


def _closed(field_: fields.Field) -> bool:
    """A string field whose values come from a fixed set, not free text. (A pattern does not
    make a field closed: a phone number has one.)"""
    return any(isinstance(v, validate.OneOf | validate.Equal) for v in field_.validators)


_OPERATIONAL_TYPES = (
    fields.Integer,
    fields.Float,
    fields.Decimal,
    fields.Boolean,
    fields.Date,
    fields.DateTime,
    fields.TimeDelta,
)


def classify_field(field_: fields.Field) -> Category | None:
    """What a field's type alone says it holds; None for free text, which must be declared."""
    if isinstance(field_, fields.UUID):
        return Category.PSEUDONYMOUS
    if isinstance(field_, fields.IP):
        return None
    if isinstance(field_, _OPERATIONAL_TYPES):
        return Category.OPERATIONAL
    if isinstance(field_, fields.String) and _closed(field_):
        return Category.OPERATIONAL
    return None


def _leaf_fields(schema: type[Schema], prefix: str = "") -> Iterator[tuple[str, fields.Field]]:
    for name, field_ in schema._declared_fields.items():
        path = prefix + name
        inner = field_.inner if isinstance(field_, fields.List) else field_
        if isinstance(inner, fields.Nested) and isinstance(inner.nested, type):
            yield from _leaf_fields(inner.nested, path + ".")
        else:
            yield path, inner


def event_field_classes(
    event_type: EventType, declared: Mapping[str, Column]
) -> Iterator[tuple[int, str, Category | None, Held | None]]:
    """Every field of every version of ``event_type``: (version, path, category, held), with
    None for a field nothing classifies."""
    encrypted = {f: Held.SUBJECT_KEY for f in event_type.personal_fields}
    encrypted.update({f: Held.TENANT_KEY for f in getattr(event_type, "tenant_fields", ())})
    for version, schema in sorted(event_type.schemas.items()):
        for path, field_ in _leaf_fields(schema):
            top = path.split(".", 1)[0]
            if top in encrypted:
                yield version, path, Category.PERSONAL, encrypted[top]
            elif path in declared:
                yield version, path, declared[path].category, declared[path].held
            else:
                yield version, path, classify_field(field_), Held.PLAINTEXT


def undeclared_event_fields(service_map: ServiceMap) -> list[str]:
    """Fields of the event versions written now that are free text nobody declared, or personal
    data in plaintext in a stored event (events are append-only: it could never be erased)."""
    problems = []
    registries = [(r, True) for r in service_map.registries]
    registries += [(r, False) for r in service_map.messages]
    for registry, stored in registries:
        for event_type in registry.types():
            declared = service_map.event_fields.get(event_type.name, {})
            for version, path, category, held in event_field_classes(event_type, declared):
                if version != event_type.latest:
                    continue  # what new code writes; older versions are history, upcast on read
                where = f"{event_type.name} v{version}.{path}"
                if category is None:
                    problems.append(f"{where}: free text that is neither encrypted nor declared")
                elif stored and category is Category.PERSONAL and held is Held.PLAINTEXT:
                    problems.append(f"{where}: personal data in plaintext in an append-only store")
    return problems


def undeclared_queues(
    queues: Iterable[Queue], live: Iterable[str], services: Iterable[str]
) -> list[str]:
    """Live queue names that no declared pattern covers."""
    patterns = [q.pattern.format(service=s) for q in queues for s in services]
    return sorted(name for name in live if not any(fnmatch.fnmatchcase(name, p) for p in patterns))


# --- rendering -------------------------------------------------------------------------------


def _ends(ends: Iterable[End]) -> str:
    return "; ".join(e.describe() for e in ends) or "—"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_tables(title: str, tables: Iterable[Table]) -> list[str]:
    lines = [f"#### {title}", ""]
    for table in tables:
        lines += [
            f"**`{table.name}`**: {_cell(table.holds)}. Rows end: {_cell(_ends(table.ends))}.",
            "",
        ]
        lines += ["| column | holds | how | ends | note |", "| --- | --- | --- | --- | --- |"]
        for c in table.columns:
            lines.append(
                f"| `{c.name}` | {c.category.value} | {c.held.value} | {_cell(_ends(c.ends))}"
                f" | {_cell(c.note)} |"
            )
        lines.append("")
    return lines


def render_events(service_map: ServiceMap) -> list[str]:
    rows = []
    for registry in service_map.registries + service_map.messages:
        for event_type in registry.types():
            declared = service_map.event_fields.get(event_type.name, {})
            latest = event_type.latest
            for version, path, category, held in event_field_classes(event_type, declared):
                if version != latest:
                    continue
                note = declared[path].note if path in declared else ""
                published = "yes" if event_type.published else "no"
                if category is Category.PERSONAL and held is not Held.PLAINTEXT:
                    published = "no (stripped)" if event_type.published else "no"
                rows.append(
                    f"| `{event_type.name}` v{version} | `{path}` | "
                    f"{category.value if category else 'UNDECLARED'} | "
                    f"{held.value if held else ''} | {published} | {_cell(note)} |"
                )
    if not rows:
        return []
    return [
        "#### Event fields (latest versions)",
        "",
        "| event | field | holds | how | published | note |",
        "| --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
    ]


def render_queues(title: str, queues: Iterable[Queue]) -> list[str]:
    lines = [
        f"#### {title}",
        "",
        "| queue | holds | category | how | ends |",
        "| --- | --- | --- | --- | --- |",
    ]
    for q in queues:
        lines.append(
            f"| `{q.pattern}` | {_cell(q.holds)} | {q.category.value} | {q.held.value} |"
            f" {_cell(_ends(q.ends))} |"
        )
    return lines + [""]


def render_fields(title: str, items: Iterable[Field]) -> list[str]:
    lines = [f"#### {title}", "", "| field | holds | category |", "| --- | --- | --- |"]
    lines += [f"| `{f.name}` | {_cell(f.holds)} | {f.category.value} |" for f in items]
    return lines + [""]


def live_columns(dsn: str) -> dict[str, list[str]]:
    """Every column of every table in a database's public schema, as PostgreSQL has them."""
    from kernel.db import connect

    conn = connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT c.table_name, c.column_name FROM information_schema.columns c"
                " JOIN information_schema.tables t USING (table_schema, table_name)"
                " WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'"
                " ORDER BY c.table_name, c.ordinal_position"
            )
            found: dict[str, list[str]] = {}
            for table, column in cur.fetchall():
                found.setdefault(table, []).append(column)
            return found
    finally:
        conn.close()
