-- The cut-off each purge went out with, per data category and tenant, kept so a restored
-- service can be brought back to what was purged (retention's log of forgetting). A tenant's
-- row holds the latest cut-off ever sent for it, so the one row covers every earlier purge;
-- tenant_id NULL is the platform default, for every tenant without a row of its own.
CREATE TABLE purge_cutoffs (
    category    text NOT NULL,
    tenant_id   uuid,
    before      timestamptz NOT NULL,
    -- The purge command that last moved it, and when it was sent.
    request_id  uuid NOT NULL,
    issued_at   timestamptz NOT NULL,
    UNIQUE NULLS NOT DISTINCT (category, tenant_id)
);

-- The access log's last purge (platform-wide until now) becomes the default's row.
INSERT INTO purge_cutoffs (category, tenant_id, before, request_id, issued_at)
    SELECT category, NULL, before, gen_random_uuid(), issued_at FROM purges;
-- Closed-ticket purges did not keep their cut-offs; just after the latest closing a purge
-- reached covers every ticket purged (each purge took all closed before its cut-off).
INSERT INTO purge_cutoffs (category, tenant_id, before, request_id, issued_at)
    SELECT 'closed_tickets', tenant_id, max(closed_at) + interval '1 microsecond',
           gen_random_uuid(), max(purged_at)
      FROM closed_tickets WHERE purged_at IS NOT NULL GROUP BY tenant_id;

DROP TABLE purges;
