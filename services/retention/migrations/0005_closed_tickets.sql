-- The clock of each closed ticket (ids and times only): when its tenant's closed-ticket period
-- runs out, retention sends the purge that erases its words.

CREATE TABLE closed_tickets (
    ticket_id  uuid PRIMARY KEY,
    tenant_id  uuid NOT NULL,
    closed_at  timestamptz NOT NULL,
    purged_at  timestamptz
);
CREATE INDEX closed_tickets_due ON closed_tickets (tenant_id, closed_at) WHERE purged_at IS NULL;
