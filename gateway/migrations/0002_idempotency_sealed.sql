-- A stored response holds names, e-mails and ticket text: from this release on it is kept only
-- sealed under its tenant's key in the gateway's keystore (AES-256-GCM, bound to the row's
-- scope and key), and the row names the subjects it concerns, so that erasing one of them
-- deletes it and destroying the tenant shreds the key and deletes the tenant's rows.
--
-- Expand-only, for a rolling upgrade: ``body`` stays for rows written by processes of the
-- previous release (plaintext, replayed until the TTL; erasure and destruction find them by
-- the ids in their text) and is dropped by a later release. This release never writes it.

ALTER TABLE idempotency_keys
    -- The tenant whose key seals the response: the scope's tenant, the tenant a sign-up
    -- created, or the platform's own id for responses no tenant owns (the operator's).
    ADD COLUMN tenant_id   uuid,
    -- The ids the response names (its ``id`` and ``*_id`` values, the path's, the resources
    -- it touched): an erasure of any of them deletes the row.
    ADD COLUMN subject_ids uuid[],
    ADD COLUMN sealed_body bytea;

ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_complete_or_not;
ALTER TABLE idempotency_keys ADD CONSTRAINT idempotency_complete_or_not CHECK (
    (status IS NULL) = (completed_at IS NULL)
    AND (status IS NULL) = (headers IS NULL)
    -- A completed row has its response one way or the other, never both.
    AND (status IS NULL) = (body IS NULL AND sealed_body IS NULL)
    AND (body IS NULL OR sealed_body IS NULL)
    -- A sealed response always says whose key seals it and whom it concerns.
    AND (sealed_body IS NULL) = (tenant_id IS NULL)
    AND (sealed_body IS NULL) = (subject_ids IS NULL)
);

-- Erasure finds the rows naming a subject, destruction the rows of a tenant.
CREATE INDEX idempotency_keys_subject_ids ON idempotency_keys USING gin (subject_ids);
CREATE INDEX idempotency_keys_tenant_id ON idempotency_keys (tenant_id);
