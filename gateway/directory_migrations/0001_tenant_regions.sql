-- The global directory in front of the region cells (gateway.router): which region's cell holds
-- each tenant. Ids only: nothing personal of a tenant is kept outside its cell.
CREATE TABLE tenant_regions (
    tenant_id    uuid PRIMARY KEY,
    region       text NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);
