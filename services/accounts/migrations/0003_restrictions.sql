-- Subjects whose data is kept but not used (GDPR restriction): no marketing, no new processing.
CREATE TABLE restrictions (
    subject_id     uuid PRIMARY KEY,
    tenant_id      uuid NOT NULL,
    request_id     uuid NOT NULL,
    restricted_at  timestamptz NOT NULL DEFAULT now()
);
