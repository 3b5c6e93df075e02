-- A tenant's webhook endpoints and the deliveries owed to them (gateway/webhooks).
--
-- An endpoint's URL and signing secret are the tenant's configuration, sealed under the tenant's
-- own key in the gateway's keystore and bound to the endpoint's id: the tenant's destruction
-- shreds that key, then deletes the rows. The secret is encrypted, not hashed: signing needs it.

CREATE TABLE webhook_endpoints (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL,
    url_sealed    bytea NOT NULL,
    secret_sealed bytea NOT NULL,
    -- Webhook event types (gateway.webhooks.catalogue), at least one.
    events        text[] NOT NULL CHECK (cardinality(events) > 0),
    created_by    uuid NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
-- A tenant's endpoints, in the order its list pages them; the fan-out finds them by tenant.
CREATE INDEX webhook_endpoints_tenant ON webhook_endpoints (tenant_id, created_at, id);

-- The outbox of webhooks: one row per event owed to an endpoint, written in the transaction that
-- consumes the event (unique per endpoint and event: a redelivered event owes nothing twice).
-- A dispatcher claims due rows with FOR UPDATE SKIP LOCKED and pushes ``next_attempt_at`` past
-- a lease while it sends, so a crash mid-send loses nothing: the row is due again when the
-- lease ends. ``data`` is the webhook's payload: ids and states only.
CREATE TABLE webhook_deliveries (
    id              uuid PRIMARY KEY,
    endpoint_id     uuid NOT NULL REFERENCES webhook_endpoints ON DELETE CASCADE,
    tenant_id       uuid NOT NULL,
    event_id        uuid NOT NULL,
    event_type      text NOT NULL,
    occurred_at     timestamptz NOT NULL,
    data            jsonb NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    UNIQUE (endpoint_id, event_id),
    -- Pending: due at a time, not finished; delivered or failed: finished, never due again.
    CHECK ((status = 'pending') = (next_attempt_at IS NOT NULL)),
    CHECK ((status = 'pending') = (finished_at IS NULL))
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_log ON webhook_deliveries (endpoint_id, created_at, id);
CREATE INDEX webhook_deliveries_finished ON webhook_deliveries (finished_at)
    WHERE status <> 'pending';
CREATE INDEX webhook_deliveries_tenant ON webhook_deliveries (tenant_id);

-- Each attempt of a delivery: the endpoint's delivery log. No request or response body.
CREATE TABLE webhook_attempts (
    delivery_id uuid    NOT NULL REFERENCES webhook_deliveries ON DELETE CASCADE,
    attempt     integer NOT NULL,
    started_at  timestamptz NOT NULL,
    ended_at    timestamptz NOT NULL,
    status_code integer,
    outcome     text    NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);
