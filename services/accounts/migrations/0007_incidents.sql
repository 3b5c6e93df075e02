-- Personal-data breaches (services/accounts/incidents.py): the operator's declaration, each
-- affected tenant's notice and its admins' acknowledgements. Read models, rebuilt from the
-- events by replay.

-- The declaration: ids and times only (what happened is in each tenant's notice).
CREATE TABLE incidents (
    id          uuid PRIMARY KEY,
    tenant_ids  uuid[] NOT NULL,
    aware_at    timestamptz NOT NULL,
    created_at  timestamptz NOT NULL
);
CREATE INDEX incidents_page ON incidents (created_at, id);

-- A tenant's copy: the operator's text and categories, deleted with the tenant (under the
-- tenant's key in the events). ``id`` is the incident's; ``created_at`` when it was sent.
CREATE TABLE incident_notices (
    id            uuid NOT NULL,
    tenant_id     uuid NOT NULL,
    categories    text[] NOT NULL,
    description   text NOT NULL,
    aware_at      timestamptz NOT NULL,
    notified_ids  uuid[] NOT NULL,
    created_at    timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX incident_notices_page ON incident_notices (tenant_id, created_at, id);
CREATE INDEX incident_notices_incident ON incident_notices (id);

-- Once per admin: the primary key is the last guard.
CREATE TABLE incident_acknowledgements (
    incident_id      uuid NOT NULL,
    tenant_id        uuid NOT NULL,
    agent_id         uuid NOT NULL,
    acknowledged_at  timestamptz NOT NULL,
    PRIMARY KEY (incident_id, agent_id)
);
CREATE INDEX incident_acknowledgements_tenant ON incident_acknowledgements (tenant_id);
