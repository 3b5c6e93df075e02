-- Shortening a retention period purges data on a schedule, as an erasure would: where a
-- tenant's approval policy names erasure, it is a change another admin decides, like lifting
-- that policy. Ids, days and times only; the reason sealed under the tenant's key.
CREATE TABLE retention_period_changes (
    id                      uuid PRIMARY KEY,
    tenant_id               uuid NOT NULL,
    category                text NOT NULL,
    days                    integer NOT NULL,
    based_on_days           integer NOT NULL,
    filed_by                uuid NOT NULL,
    filed_key_issuer        uuid NOT NULL,
    status                  text NOT NULL
        CHECK (status IN ('awaiting_approval', 'approved', 'denied', 'superseded')),
    created_at              timestamptz NOT NULL,
    decided_by              uuid,
    decided_at              timestamptz,
    decision_reason_sealed  text CHECK (decision_reason_sealed LIKE '{"$enc":%')
);
-- One change waits per category: a newer filing or a period applied supersedes it.
CREATE UNIQUE INDEX retention_period_changes_one_open
    ON retention_period_changes (tenant_id, category) WHERE status = 'awaiting_approval';
CREATE INDEX retention_period_changes_page
    ON retention_period_changes (tenant_id, created_at, id);
