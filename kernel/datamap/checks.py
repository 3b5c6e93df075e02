"""The data map held against what exists: live columns, the code that ends personal data,
event schemas and queues (see ``kernel.datamap``)."""

from __future__ import annotations

import ast
import fnmatch
import importlib
import inspect
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from marshmallow import Schema, fields, validate

from kernel.datamap.model import (
    FORGETTING,
    Category,
    Column,
    Held,
    Queue,
    ServiceMap,
    Table,
    When,
)
from kernel.envelope import EventType


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


def source_of(by: str) -> str | None:
    """The code an end names: ``module:function`` (a method as ``Class.method``; a nested
    function by its own name), a module, or a migration file by its path from the project's
    root. None when there is no such code."""
    try:
        if by.endswith(".sql"):
            return (Path(__file__).resolve().parents[2] / by).read_text()
        module_name, _, qualname = by.partition(":")
        module = importlib.import_module(module_name)
        source = inspect.getsource(module)
    except (ImportError, OSError, TypeError):
        return None
    if not qualname:
        return source
    scope: list[ast.AST] = [ast.parse(source)]
    for part in qualname.split("."):
        found = next(
            (
                node
                for root in scope
                for node in ast.walk(root)
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
                and node.name == part
            ),
            None,
        )
        if found is None:
            return None
        scope = [found]
    return ast.get_source_segment(source, scope[0])


def unended(tables: Iterable[Table]) -> list[str]:
    """Personal data no declared end reaches: a personal or secret column with nothing that
    forgets it, or held in plaintext with an end that names no function (or a migration), or
    a function whose code never names its table."""
    problems = []
    for table in tables:
        for column in table.columns:
            if column.category not in (Category.PERSONAL, Category.SECRET):
                continue
            ends = column.ends + table.ends
            where = f"{table.name}.{column.name}"
            if not any(e.when in FORGETTING or e.when is When.PUBLICATION for e in ends):
                problems.append(f"{where}: {column.category.value} data that nothing ends")
                continue
            if column.held is not Held.PLAINTEXT:
                continue
            for end in ends:
                if end.when not in FORGETTING + (When.PUBLICATION,):
                    continue
                if ":" not in end.by and not end.by.endswith(".sql"):
                    problems.append(
                        f"{where}: ends by {end.when.value} but names no function that does"
                    )
                    continue
                source = source_of(end.by)
                if source is None:
                    problems.append(f"{where}: {end.by} does not exist")
                elif table.name not in source:
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
