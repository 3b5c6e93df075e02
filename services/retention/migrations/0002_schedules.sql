-- Clocks that run out: a cancelled tenant's grace (its end comes with the cancellation event),
-- and the last purge of each data category.

CREATE TABLE schedules (
    tenant_id   uuid NOT NULL,
    kind        text NOT NULL,
    due_at      timestamptz NOT NULL,
    status      text NOT NULL,
    request_id  uuid,
    PRIMARY KEY (tenant_id, kind)
);
CREATE INDEX schedules_due ON schedules (due_at) WHERE status = 'waiting';

-- Retention periods per data category, overridable per tenant (tenant_id NULL: the default).
CREATE TABLE policies (
    category   text NOT NULL,
    tenant_id  uuid,
    days       integer NOT NULL CHECK (days > 0),
    UNIQUE NULLS NOT DISTINCT (category, tenant_id)
);
INSERT INTO policies (category, tenant_id, days) VALUES
    ('access_log', NULL, 60),
    ('closed_tickets', NULL, 730);

CREATE TABLE purges (
    category   text PRIMARY KEY,
    before     timestamptz NOT NULL,
    issued_at  timestamptz NOT NULL
);
