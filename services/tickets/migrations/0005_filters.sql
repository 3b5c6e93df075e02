-- Tickets by tag, though tags are encrypted under each ticket's key: a blind index
-- (services/tickets/lookups.py), the HMAC-SHA-256 of each normalised tag under a key derived
-- from the tenant's, which lives in the keystore: never the tag. A read model like the others,
-- rebuilt from the events by replay; the service fills it when it first starts on this
-- migration (it cannot be computed here: the keys live in another database).
CREATE TABLE ticket_tag_digests (
    ticket_id  uuid NOT NULL,
    tenant_id  uuid NOT NULL,
    digest     bytea NOT NULL,
    PRIMARY KEY (ticket_id, digest)
);
CREATE INDEX ticket_tag_digests_find ON ticket_tag_digests (tenant_id, digest);

-- The list's other filters: by priority, and tickets changed since a moment in the order they
-- changed (?updated_since=, for clients that keep a copy in step; also ?updated_after=).
CREATE INDEX tickets_priority ON tickets (tenant_id, priority);
CREATE INDEX tickets_changed ON tickets (tenant_id, updated_at, id);
