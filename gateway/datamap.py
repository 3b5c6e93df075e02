"""What the gateway keeps: the data map's declaration (kernel.datamap)."""

from gateway.accesslog import REGISTRY
from kernel.datamap import (
    End,
    Held,
    ServiceMap,
    Table,
    When,
    operational,
    personal,
)

_IDEMPOTENCY = "gateway.idempotency"
EXPIRED = End(When.TTL, "deleted 24 hours after the first request", _IDEMPOTENCY)

DATA_MAP = ServiceMap(
    service="gateway",
    summary="the HTTP entry: remembered responses for Idempotency-Key retries, and the outbox"
    " of access-log events",
    tables=(
        Table(
            "idempotency_keys",
            "the first response to a POST with an Idempotency-Key, replayed to its retries",
            (
                operational("scope", "the tenant id, or 'signup'"),
                operational("key", "the client's Idempotency-Key; card numbers refused"),
                operational("fingerprint", "SHA-256 of method, path and body"),
                operational("status"),
                operational("headers", "Content-Type, ETag, Location"),
                personal("body", Held.PLAINTEXT, EXPIRED, note="the response, API keys removed"),
                operational("created_at"),
                operational("completed_at"),
            ),
            ends=(EXPIRED,),
        ),
    ),
    messages=(REGISTRY,),
    event_fields={
        "access_logged": {
            "method": operational("method", "the HTTP method"),
            "trace_id": operational("trace_id", "the request's trace"),
            "route": operational("route", "the route's template, never the raw path or query"),
            "resource_ids": operational("resource_ids", "ids the request touched"),
            "ip": personal("ip", Held.PLAINTEXT, note="encrypted by audit on receipt"),
            "user_agent": personal("user_agent", Held.PLAINTEXT, note="likewise"),
        }
    },
)
