-- Data keys for crypto-shredding. Personal fields in events are encrypted under a per-subject
-- key; erasing a subject destroys that key, so the append-only history never has to change.
-- This database is kept apart from every event store so that a backup of the events holds
-- ciphertext only, never a key that opens it.
--
-- A key is destroyed by setting wrapped_key to NULL; the row stays behind as a tombstone. It
-- records when the erasure happened, and because keys are created with INSERT ... ON CONFLICT
-- DO NOTHING the tombstone stops an erased subject or tenant from ever getting a fresh key.
--
-- PostgreSQL keeps an updated row's old version until VACUUM reclaims it, and the WAL and any
-- backup of this database keep it longer: keystore backups must expire within the erasure
-- deadline, or restoring one would undo an erasure.

CREATE TABLE tenant_keys (
    tenant_id      uuid PRIMARY KEY,
    -- Which master key wraps this key, so the master key can rotate tenant by tenant while
    -- keys still wrapped under an older one keep opening. NULL when a tenant was erased before
    -- it ever had a key.
    master_key_id  text,
    -- nonce || AES-256-GCM ciphertext, with the tenant id as associated data, so a wrapped key
    -- copied onto another tenant's row fails to open instead of exposing that tenant's data.
    wrapped_key    bytea,
    created_at     timestamptz NOT NULL DEFAULT now(),
    shredded_at    timestamptz,
    -- A live key must say which master key opens it; an erased one must hold no key bytes.
    CONSTRAINT tenant_key_live_or_shredded CHECK (
        (wrapped_key IS NOT NULL AND master_key_id IS NOT NULL AND shredded_at IS NULL)
        OR (wrapped_key IS NULL AND shredded_at IS NOT NULL)
    )
);
-- Rotation looks only for live keys still under an old master key.
CREATE INDEX tenant_keys_live_by_master ON tenant_keys (master_key_id)
    WHERE wrapped_key IS NOT NULL;

CREATE TABLE subject_keys (
    -- One key per subject: a subject id is unique across tenants, so its erasure is one row.
    subject_id   uuid PRIMARY KEY,
    -- Tenant rows are never deleted (they become tombstones), so this reference never dangles.
    tenant_id    uuid NOT NULL REFERENCES tenant_keys (tenant_id),
    -- Wrapped under the tenant key rather than the master key: destroying one tenant key makes
    -- every subject of that tenant unreadable at once, and rotating the master key rewrites one
    -- row per tenant instead of one per subject. The associated data binds tenant and subject.
    wrapped_key  bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    shredded_at  timestamptz,
    CONSTRAINT subject_key_live_or_shredded CHECK ((wrapped_key IS NULL) = (shredded_at IS NOT NULL))
);
-- Erasing a tenant destroys all of its subject keys in the same transaction.
CREATE INDEX subject_keys_tenant ON subject_keys (tenant_id);
