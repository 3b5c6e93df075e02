-- Requesters whose data is kept but not processed further (GDPR restriction): no new tickets.
CREATE TABLE restrictions (
    subject_id     uuid PRIMARY KEY,
    tenant_id      uuid NOT NULL,
    restricted_at  timestamptz NOT NULL DEFAULT now()
);
