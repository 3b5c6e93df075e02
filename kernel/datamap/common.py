"""What the kernel creates in every service's databases (event store, outbox, inbox, keystore),
the queues every service has, and the fields of log lines and spans: the data map's share that
no single service declares."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kernel.datamap.model import (
    Category,
    Column,
    End,
    Field,
    Held,
    Queue,
    Table,
    When,
    operational,
    pseudonym,
    secret,
)

_RELAY = "kernel.relay:OutboxRelay.publish_pending"
_KEYSTORE = "kernel.crypto.keystore"

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
            operational("tx_order", "the appending transaction's id, for the global order"),
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
        "tenant_fences",
        "tenants being moved between region cells (services.tenant_move): no event of theirs"
        " is appended while fenced, and only a fenced tenant's events may be removed",
        (
            pseudonym(
                "tenant_id",
                note="from the move's freeze to its end: deleted at the cut-over in the target,"
                " after the source's copy is destroyed in the source, and by a rollback in both",
            ),
            operational("fenced_at"),
        ),
        ends=(
            End(
                When.DELETED,
                "the mover deletes the row when the move no longer needs it",
                "services.tenant_move:Mover",
            ),
        ),
    ),
    Table(
        "projection_state",
        "how far each read model was rebuilt",
        (
            operational("name"),
            operational("position"),
            operational("tx_order"),
            operational("rebuilt_at"),
        ),
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
        "RPC answers on their way back to a caller: what the caller asked for (accounts'"
        " credentials for the gateway carry API keys' keyed hashes, never the keys)",
        Category.PERSONAL,
        Held.PLAINTEXT,
        (End(When.CONSUMED, "consumed by the caller; the queue ends with its connection"),),
    ),
)

# Queues that live for the moment a dead-letter or RPC queue is replaced
# (kernel.queue_replacement).
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


# The one published event that carries personal data in plaintext, for the audit ledger.
ACCESS_EVENT = "gateway.access_logged"


def subscription_queues(subscriptions: Iterable[Any]) -> tuple[Queue, ...]:
    """Each consumer queue (``kernel.topology.Subscription``) and its dead-letter queue: what
    they hold is the published events they are bound to, which carry ids and states, and an
    access event's IP address and user agent where they are bound to access events."""
    from kernel.nameko_adapters.events import topic_matches

    queues: list[Queue] = []
    for subscription in subscriptions:
        bound = ", ".join(subscription.bindings)
        accesses = any(topic_matches(b, ACCESS_EVENT) for b in subscription.bindings)
        category = Category.PERSONAL if accesses else Category.PSEUDONYMOUS
        holds = "ids and states" + (
            "; an access event's IP address and user agent, for the ledger" if accesses else ""
        )
        queues.append(
            Queue(
                subscription.queue,
                f"published events ({bound}): {holds}",
                category,
                Held.PLAINTEXT,
                (End(When.CONSUMED, "acknowledged once handled"),),
            )
        )
        queues.append(
            Queue(
                subscription.dead_letter_queue,
                f"what {subscription.queue} could not handle, as published: {holds}",
                category,
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
    Field("rpc.system", "semantic conventions: `nameko` for an RPC's worker"),
    Field("rpc.service", "semantic conventions: the service an RPC called"),
    Field("rpc.method", "semantic conventions: the method an RPC called"),
    Field("http.request.method", "semantic conventions: an HTTP request's method"),
    Field("http.route", "semantic conventions: the route's template, never the path as sent"),
    Field("messaging.system", "semantic conventions: `rabbitmq` for a consumed event"),
    Field("messaging.operation.type", "semantic conventions: `process` for a consumed event"),
    Field("messaging.destination.name", "semantic conventions: the queue it was consumed from"),
    Field("db.system", "semantic conventions: `postgresql` on a database span"),
    Field("db.namespace", "semantic conventions: the database's name (ids of the deployment)"),
    Field("db.operation.name", "semantic conventions: `transaction` or `read`, never a query"),
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
