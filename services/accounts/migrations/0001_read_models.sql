-- Accounts' read models; rebuilt from the event store by replay at any time.

CREATE TABLE tenants (
    id          uuid PRIMARY KEY,
    company     text NOT NULL,
    region      text NOT NULL,
    status      text NOT NULL,
    plan        text NOT NULL,
    created_at  timestamptz NOT NULL,
    version     integer NOT NULL
);

CREATE TABLE agents (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL,
    role        text NOT NULL,
    name        text NOT NULL,
    email       text NOT NULL,
    active      boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL
);
CREATE INDEX agents_tenant ON agents (tenant_id);

CREATE TABLE api_keys (
    key_hash    text PRIMARY KEY,
    key_id      uuid NOT NULL UNIQUE,
    agent_id    uuid NOT NULL,
    issued_at   timestamptz NOT NULL,
    revoked_at  timestamptz
);
