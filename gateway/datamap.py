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
    pseudonym,
    secret,
)

_IDEMPOTENCY = "gateway.idempotency"
_MIGRATION = "gateway/migrations/0002_idempotency_sealed.sql"
EXPIRED = End(
    When.TTL,
    "deleted by an hourly purge once 24 hours old (so at 25 hours at most)",
    f"{_IDEMPOTENCY}:IdempotencyStore.purge_expired",
)
ERASED = End(When.ERASURE, "rows naming the subject are deleted", f"{_IDEMPOTENCY}:forget_subject")
DESTROYED = End(When.DESTRUCTION, "the tenant's rows are deleted", f"{_IDEMPOTENCY}:forget_tenant")

_CREDENTIALS = "gateway.credentials"
CREDENTIALS_ERASED = End(
    When.ERASURE,
    "an erased agent authenticates no more; their keys' rows are deleted",
    f"{_CREDENTIALS}:forget_agent",
)
CREDENTIALS_DESTROYED = End(
    When.DESTRUCTION,
    "the tenant's agents and keys are deleted",
    f"{_CREDENTIALS}:forget_tenant",
)

_WEBHOOKS = "gateway.webhooks.store"
WEBHOOKS_DELETED = End(
    When.DELETED,
    "an admin deletes the endpoint: its row goes, and its deliveries and their attempts with it",
    f"{_WEBHOOKS}:Webhooks.delete",
)
WEBHOOKS_DESTROYED = End(
    When.DESTRUCTION,
    "the tenant's key is shredded, then its endpoints and deliveries are deleted",
    f"{_WEBHOOKS}:forget_tenant",
)
WEBHOOK_SECRET_REPLACED = End(
    When.REPLACED,
    "a rotation (POST /v1/webhooks/{id}/secret) replaces it: the old value moves, sealed again,"
    " to previous_secret_sealed",
    f"{_WEBHOOKS}:Webhooks.rotate_secret",
)
WEBHOOK_PREVIOUS_SECRET_EXPIRED = End(
    When.TTL,
    "LEDGERDESK_WEBHOOK_SECRET_GRACE_HOURS (24 h) after the rotation it signs no more, and a"
    " purge every minute clears it (a newer rotation drops it at once)",
    f"{_WEBHOOKS}:expire_previous_secrets",
)
WEBHOOK_LOG_EXPIRED = End(
    When.TTL,
    "a delivered or failed delivery is deleted, with its attempts, once LEDGERDESK_WEBHOOK_LOG_DAYS"
    " (30 days) have passed since it finished, by a purge every minute",
    f"{_WEBHOOKS}:purge_finished",
)

DATA_MAP = ServiceMap(
    service="gateway",
    summary="the HTTP entry: remembered responses for Idempotency-Key retries, sealed under"
    " the tenant's key; the credentials it authenticates with, projected from accounts (ids,"
    " states, keyed hashes); its tenants' webhook endpoints (URL and signing secret under the"
    " tenant's key) and the deliveries owed to them (ids and states); and the outbox of"
    " access-log events; it answers privacy commands (erasure and destruction reach the"
    " remembered responses and the credentials, destruction the webhooks)",
    tables=(
        Table(
            "idempotency_keys",
            "the first response to a POST with an Idempotency-Key, replayed to its retries",
            (
                operational(
                    "scope",
                    "the tenant id; `<tenant id>:<agent id>` for a request whose effect is the"
                    " caller's own (an acknowledgement, a message they write), deleted with the"
                    " agent's erasure; or 'signup', 'operator'",
                ),
                personal(
                    "key",
                    Held.PLAINTEXT,
                    note="the client's Idempotency-Key: free text it chose; card numbers refused",
                ),
                personal(
                    "fingerprint",
                    Held.PLAINTEXT,
                    note="SHA-256 of method, path and body: a guess of a body can be confirmed",
                ),
                operational("status"),
                operational("headers", "Content-Type, ETag, Location"),
                personal(
                    "body",
                    Held.PLAINTEXT,
                    End(When.RETIRED, "written by the previous release only", _MIGRATION),
                    ERASED,
                    DESTROYED,
                    EXPIRED,
                    note="rows of the previous release; found by the ids in their text",
                ),
                operational("created_at"),
                operational("completed_at"),
                pseudonym("tenant_id", "whose key seals the response"),
                pseudonym("subject_ids", "every id the response names"),
                personal(
                    "sealed_body",
                    Held.TENANT_KEY,
                    ERASED,
                    End(
                        When.DESTRUCTION,
                        "the tenant's key is shredded, the rows deleted",
                        _IDEMPOTENCY,
                    ),
                    EXPIRED,
                    note="the response, API keys blanked, bound to its scope and key",
                ),
            ),
            ends=(EXPIRED, ERASED, DESTROYED),
        ),
        Table(
            "credential_keys",
            "each API key the gateway authenticates: its keyed hash and whom it answers to,"
            " projected from accounts (gateway.credentials)",
            (
                pseudonym("key_id"),
                secret(
                    "key_hash",
                    Held.KEYED_HASH,
                    CREDENTIALS_ERASED,
                    CREDENTIALS_DESTROYED,
                    note="HMAC-SHA-256 under the platform's API key secret; set to NULL when"
                    " the key is revoked or its agent deactivated",
                ),
                pseudonym("agent_id"),
                pseudonym("issuer_id", "whom the key answers to for four eyes"),
                operational("issued_at"),
                operational("active"),
            ),
            ends=(CREDENTIALS_ERASED, CREDENTIALS_DESTROYED),
        ),
        Table(
            "credential_agents",
            "each agent a key may belong to: tenant, role, whether active, since when an admin",
            (
                pseudonym("agent_id"),
                pseudonym("tenant_id"),
                operational("role"),
                operational("active"),
                operational("admin_since"),
            ),
            ends=(
                CREDENTIALS_DESTROYED,
                End(
                    When.KEPT,
                    "an erased agent's row stays, ids only and inactive, so that no later"
                    " news revives it",
                ),
            ),
        ),
        Table(
            "credential_tenants",
            "each tenant's status and the version of its stream it was read at",
            (pseudonym("tenant_id"), operational("status"), operational("version")),
            ends=(
                End(
                    When.KEPT,
                    "ids and status only; a destroyed tenant's row stays as its tombstone",
                    f"{_CREDENTIALS}:forget_tenant",
                ),
            ),
        ),
        Table(
            "credential_projection",
            "whether the credentials are built: stale, rebuilding or ready",
            (
                operational("one"),
                operational("status"),
                operational("changed_at"),
                operational("reconciled_at"),
            ),
        ),
        Table(
            "webhook_endpoints",
            "a tenant's webhook endpoints: where its events are posted, which ones, and the"
            " secret that signs them",
            (
                pseudonym("id"),
                pseudonym("tenant_id"),
                personal(
                    "url_sealed",
                    Held.TENANT_KEY,
                    WEBHOOKS_DELETED,
                    WEBHOOKS_DESTROYED,
                    note="the tenant's configuration: its host or query can name someone or"
                    " carry a receiver's token; never logged",
                ),
                secret(
                    "secret_sealed",
                    Held.TENANT_KEY,
                    WEBHOOK_SECRET_REPLACED,
                    WEBHOOKS_DELETED,
                    WEBHOOKS_DESTROYED,
                    note="the HMAC-SHA256 signing secret, encrypted (signing needs it), shown"
                    " once when registered or rotated",
                ),
                secret(
                    "previous_secret_sealed",
                    Held.TENANT_KEY,
                    WEBHOOK_PREVIOUS_SECRET_EXPIRED,
                    WEBHOOK_SECRET_REPLACED,
                    WEBHOOKS_DELETED,
                    WEBHOOKS_DESTROYED,
                    note="the secret a rotation replaced, sealed again bound to this column: it"
                    " signs beside the new one for the grace, so receivers switch without a"
                    " lost delivery",
                ),
                operational("previous_secret_until", "when the previous secret's grace ends"),
                operational("secret_rotated_at"),
                operational("events", "webhook event types"),
                pseudonym("created_by", "the admin who registered it"),
                operational("created_at"),
            ),
            ends=(WEBHOOKS_DELETED, WEBHOOKS_DESTROYED),
        ),
        Table(
            "webhook_deliveries",
            "the outbox of webhooks: each event owed to an endpoint, its state and next"
            " attempt; the endpoint's delivery log",
            (
                pseudonym("id"),
                pseudonym("endpoint_id"),
                pseudonym("tenant_id"),
                pseudonym("event_id", "the integration event's id, sent as Ledgerdesk-Event-Id"),
                operational("event_type", "a catalogue event's name, or webhook.ping"),
                operational("occurred_at"),
                pseudonym(
                    "data",
                    "the webhook's payload: ids (ticket, requester, assignee, author, message,"
                    " request, subject; a ping's endpoint) and states (status, priority, type);"
                    " never text",
                ),
                operational("status"),
                operational("attempts"),
                operational("next_attempt_at"),
                operational("created_at"),
                operational("finished_at"),
            ),
            ends=(WEBHOOK_LOG_EXPIRED, WEBHOOKS_DELETED, WEBHOOKS_DESTROYED),
        ),
        Table(
            "webhook_attempts",
            "each attempt of a delivery: when, the answer's status code, the outcome; no body",
            (
                pseudonym("delivery_id"),
                operational("attempt"),
                operational("started_at"),
                operational("ended_at"),
                operational("status_code"),
                operational("outcome"),
            ),
            ends=(WEBHOOK_LOG_EXPIRED, WEBHOOKS_DELETED, WEBHOOKS_DESTROYED),
        ),
    ),
    messages=(REGISTRY,),
    event_fields={
        "access_logged": {
            "method": operational("method", "the HTTP method"),
            "trace_id": operational("trace_id", "the request's trace"),
            "route": operational("route", "the route's template, never the raw path or query"),
            "resource_ids": operational(
                "resource_ids", "every id the request named or its answer showed"
            ),
            "ip": personal(
                "ip",
                Held.PLAINTEXT,
                note="the socket peer, or the client a trusted proxy names"
                " (LEDGERDESK_TRUSTED_PROXIES); encrypted by audit on receipt",
            ),
            "user_agent": personal("user_agent", Held.PLAINTEXT, note="likewise"),
        },
        # Counts of one interval's unauthenticated requests past the access log's budget:
        # no address, user agent, tenant or id.
        "access_summarized": {
            "requests.method": operational("requests.method", "an HTTP method, or OTHER"),
            "requests.route": operational(
                "requests.route", "the route's template, never the raw path or query"
            ),
        },
    },
)
