-- How far each tenant's own view of verification has got (services.audit.tenant_view): its
-- entries up to last_seq are proved included in a signed checkpoint (verified_size, the
-- latest when they were proved), so a call proves only what came after, a bounded number at a
-- time. Ids and counts only; the row goes with the tenant (its destruction).
CREATE TABLE tenant_verifications (
    tenant_id      uuid PRIMARY KEY,
    verified_size  bigint NOT NULL DEFAULT 0,
    last_seq       bigint NOT NULL DEFAULT 0,
    included       bigint NOT NULL DEFAULT 0,
    failed         bigint NOT NULL DEFAULT 0,
    first_bad_seq  bigint,
    checked_at     timestamptz
);
