-- The service records into the per-tenant logs (0006) from this release on: the single chain
-- (ledger, ledger_nodes, checkpoints) is frozen, read and proved as before, and committed to by
-- every platform checkpoint.

-- Every entry, the frozen chain's and the tenant logs', for the reads that list them (the API's
-- listing, a subject's entries, the tenant export) and for an operator's ad hoc queries. An
-- entry is named by its log ('frozen' or 'tenant'), the log's id (a tenant's id, the nil uuid
-- for platform events and for the whole frozen chain) and its seq in that log; that triple is
-- also the listing's order: the frozen chain first, then each log in turn.
CREATE VIEW ledger_entries_all AS
    SELECT 'frozen'::text AS log, '00000000-0000-0000-0000-000000000000'::uuid AS log_id,
           seq, event_id, type, service, tenant_id, actor_id, subject_ids, at, access_key,
           recorded_at, content, prev_hash, hash, leaf_hash
      FROM ledger
    UNION ALL
    SELECT 'tenant'::text, tenant_id,
           seq, event_id, type, service,
           NULLIF(tenant_id, '00000000-0000-0000-0000-000000000000'::uuid), actor_id,
           subject_ids, at, access_key, recorded_at, content, prev_hash, hash, leaf_hash
      FROM log_entries;

-- The verification job walks the tenant logs too (TenantLogs.verify_platform): its verdict on
-- them, in counts (which logs failed is the command line's to say, not a row kept for ever).
ALTER TABLE ledger_verifications
    ADD COLUMN logs_ok      boolean,
    ADD COLUMN logs         integer,
    ADD COLUMN log_entries  bigint,
    ADD COLUMN bad_logs     integer;
