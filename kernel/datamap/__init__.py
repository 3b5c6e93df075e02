"""The data map: every place Ledgerdesk keeps data, what it holds, how, and what ends it.

Each service declares its tables, the free-text fields of its events and what its queues carry
next to its migrations (``services/<name>/datamap.py``); ``common`` declares what the kernel
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

``markdown`` writes the whole map as Markdown (``docs/data-map.md``, by ``python -m
services.datamap``), a test keeps that file current, and the whole-store sweep in the tests
proves the ends empirically: after an erasure, an expiry and a destruction no byte of the
planted data is left anywhere but under a legal hold.
"""

from kernel.datamap.checks import (
    classify_field,
    event_field_classes,
    live_columns,
    source_of,
    undeclared_columns,
    undeclared_event_fields,
    undeclared_queues,
    unended,
)
from kernel.datamap.common import (
    KEYSTORE_TABLES,
    LOG_FIELDS,
    MIGRATIONS_TABLE,
    SERVICE_QUEUES,
    SHREDDED_WITH_SUBJECT,
    SHREDDED_WITH_TENANT,
    SPAN_ATTRIBUTES,
    STORE_TABLES,
    TRANSIENT_QUEUES,
    subscription_queues,
)
from kernel.datamap.markdown import render_events, render_fields, render_queues, render_tables
from kernel.datamap.model import (
    Category,
    Column,
    End,
    Field,
    Held,
    Queue,
    ServiceMap,
    Table,
    When,
    operational,
    personal,
    pseudonym,
    secret,
)

__all__ = [
    "KEYSTORE_TABLES",
    "LOG_FIELDS",
    "MIGRATIONS_TABLE",
    "SERVICE_QUEUES",
    "SHREDDED_WITH_SUBJECT",
    "SHREDDED_WITH_TENANT",
    "SPAN_ATTRIBUTES",
    "STORE_TABLES",
    "TRANSIENT_QUEUES",
    "Category",
    "Column",
    "End",
    "Field",
    "Held",
    "Queue",
    "ServiceMap",
    "Table",
    "When",
    "classify_field",
    "event_field_classes",
    "live_columns",
    "operational",
    "personal",
    "pseudonym",
    "render_events",
    "render_fields",
    "render_queues",
    "render_tables",
    "secret",
    "source_of",
    "subscription_queues",
    "undeclared_columns",
    "undeclared_event_fields",
    "undeclared_queues",
    "unended",
]
