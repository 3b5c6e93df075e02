-- A tenant's whole export (services/retention/tenant_exports.py): the job's row (ids, states,
-- counts and times only) and the archive it builds, in chunks sealed under a key of the
-- export's own in retention's keystore (a subject key under the tenant's key). An expiry, an
-- erasure in the tenant or its destruction deletes the chunks and shreds the key.
CREATE TABLE tenant_exports (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL,
    requested_by    uuid NOT NULL,
    status          text NOT NULL
        CHECK (status IN ('queued', 'building', 'ready', 'failed', 'expired', 'deleted')),
    -- Also the moment the export is "as of": rows created from then on are not in it.
    created_at      timestamptz NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    -- Whoever builds it renews this after every page; a builder that died lets it lapse.
    lease_until     timestamptz,
    started_at      timestamptz,
    rows_expected   bigint,
    rows_done       bigint NOT NULL DEFAULT 0,
    ready_at        timestamptz,
    expires_at      timestamptz,
    counts          jsonb,
    chunks          integer,
    archive_bytes   bigint,
    archive_sha256  text,
    ended_at        timestamptz,
    end_reason      text CHECK (end_reason IN ('expired', 'erasure', 'failed')),
    ended_by        uuid
);
-- One export at a time per tenant: asking again while one is under way returns that one.
CREATE UNIQUE INDEX tenant_exports_one_open ON tenant_exports (tenant_id)
    WHERE status IN ('queued', 'building');
CREATE INDEX tenant_exports_page ON tenant_exports (tenant_id, created_at, id);
CREATE INDEX tenant_exports_open ON tenant_exports (created_at)
    WHERE status IN ('queued', 'building');
CREATE INDEX tenant_exports_expiring ON tenant_exports (expires_at) WHERE status = 'ready';

CREATE TABLE tenant_export_chunks (
    export_id  uuid NOT NULL REFERENCES tenant_exports (id) ON DELETE CASCADE,
    seq        integer NOT NULL,
    sealed     bytea NOT NULL,
    PRIMARY KEY (export_id, seq)
);
