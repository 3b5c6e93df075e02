"""The data map's vocabulary: what a column, table, queue or log field holds, how it is held,
and what ends it (see ``kernel.datamap``)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from kernel.envelope import EventRegistry


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
    DELETED = "its deletion by the tenant"
    RETIRED = "retired: no longer written"
    KEPT = "kept"


# What actually ends personal data: the others only move it on or say it stays.
FORGETTING = (
    When.ERASURE,
    When.DESTRUCTION,
    When.PERIOD,
    When.LEGAL_HOLD,
    When.TTL,
    When.RETIRED,
    When.DELETED,
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
    # What it keeps outside its databases (an object store's bucket, when a deployment chooses
    # one), declared as tables: one row an object, its key's parts and its body the columns.
    objects: tuple[Table, ...] = ()

    def database_tables(self, purpose: str = "") -> tuple[Table, ...]:
        """Every table of the service's data database (``""``) or keystore (``"keys"``): the
        kernel's and its own."""
        from kernel.datamap.common import KEYSTORE_TABLES, STORE_TABLES

        if purpose == "keys":
            return KEYSTORE_TABLES + self.key_tables
        return STORE_TABLES + self.tables


# Shorthands for declarations.


def pseudonym(name: str, note: str = "") -> Column:
    return Column(name, Category.PSEUDONYMOUS, note=note)


def operational(name: str, note: str = "") -> Column:
    return Column(name, Category.OPERATIONAL, note=note)


def personal(name: str, held: Held, *ends: End, note: str = "") -> Column:
    return Column(name, Category.PERSONAL, held, tuple(ends), note)


def secret(name: str, held: Held, *ends: End, note: str = "") -> Column:
    return Column(name, Category.SECRET, held, tuple(ends), note)
