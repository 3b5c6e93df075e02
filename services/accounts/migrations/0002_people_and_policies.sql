-- Cancellation, contacts with their consent history, policy versions and acceptances.

ALTER TABLE tenants ADD COLUMN destroy_after timestamptz;

ALTER TABLE agents ADD COLUMN deactivated_at timestamptz;
CREATE INDEX agents_page ON agents (tenant_id, created_at, id);

CREATE TABLE contacts (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL,
    name        text NOT NULL,
    email       text NOT NULL,
    phone       text,
    marketing   boolean NOT NULL DEFAULT false,
    version     integer NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX contacts_page ON contacts (tenant_id, created_at, id);

-- The full history: a consent is never overwritten, only followed by a newer record.
CREATE TABLE consents (
    contact_id      uuid NOT NULL,
    tenant_id       uuid NOT NULL,
    marketing       boolean NOT NULL,
    source          text NOT NULL,
    policy_version  text NOT NULL,
    recorded_at     timestamptz NOT NULL,
    version         integer NOT NULL,
    PRIMARY KEY (contact_id, version)
);

CREATE TABLE policies (
    version       text PRIMARY KEY,
    published_at  timestamptz NOT NULL,
    seq           integer NOT NULL UNIQUE
);

CREATE TABLE policy_acceptances (
    agent_id     uuid NOT NULL,
    tenant_id    uuid NOT NULL,
    version      text NOT NULL,
    accepted_at  timestamptz NOT NULL,
    PRIMARY KEY (agent_id, version)
);
