-- A webhook endpoint's signing secret rotated (gateway/webhooks/store.py, Webhooks.rotate_secret):
-- the secret it replaced goes on signing beside the new one (a second v1= in the header) until
-- ``previous_secret_until`` (LEDGERDESK_WEBHOOK_SECRET_GRACE_HOURS after the rotation), so a
-- receiver can switch to the new secret without losing a delivery. Sealed under the tenant's key
-- like the secret itself, bound to its own column; cleared by ``expire_previous_secrets`` once
-- its time passed (and never used after it, cleared or not), deleted with the endpoint, and
-- unreadable once the tenant's key is shredded.
ALTER TABLE webhook_endpoints
    ADD COLUMN previous_secret_sealed bytea,
    ADD COLUMN previous_secret_until  timestamptz,
    ADD COLUMN secret_rotated_at      timestamptz,
    ADD CONSTRAINT webhook_endpoints_previous_secret
        CHECK ((previous_secret_sealed IS NULL) = (previous_secret_until IS NULL));
-- The purge of previous secrets whose grace is over.
CREATE INDEX webhook_endpoints_previous_secret_until ON webhook_endpoints (previous_secret_until)
    WHERE previous_secret_sealed IS NOT NULL;
