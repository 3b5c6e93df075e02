-- Access-log IPs and user agents go under a key per tenant and day (LEDGERDESK_DAY_SECONDS)
-- instead of one per calendar month shared by every tenant: a tenant's own retention period
-- can then be kept to within a day, and its destruction takes its access log with it.
--
-- The ledger is append-only: entries recorded so far keep their month (and its key); new ones
-- name their day instead, and only access entries name a key at all.
ALTER TABLE ledger ALTER COLUMN month DROP NOT NULL;
-- The name of the day whose key encrypts this entry's IP and user agent, e.g.
-- '2026-11-22T00:00:00Z/PT86400S' (its start and length); NULL for other entries.
ALTER TABLE ledger ADD COLUMN access_key text;

-- Every access-log key with entries, listed when its first entry is recorded, so a purge reads
-- one row per tenant and day rather than the ledger. name is a day's (as above) or, for the
-- entries recorded before, a month's ('2026-08'); ends_at is when that day or month ends.
CREATE TABLE access_log_keys (
    tenant_id  uuid,
    name       text NOT NULL,
    ends_at    timestamptz NOT NULL,
    UNIQUE NULLS NOT DISTINCT (tenant_id, name)
);
CREATE INDEX access_log_keys_ends ON access_log_keys (ends_at);

INSERT INTO access_log_keys (tenant_id, name, ends_at)
    SELECT DISTINCT tenant_id, month,
           ((month || '-01')::date + interval '1 month')::timestamp AT TIME ZONE 'UTC'
      FROM ledger WHERE type = 'access_logged';
