-- What the gateway authenticates with, without asking accounts on every request: a projection
-- of accounts' credentials (gateway/credentials.py). Ids, states and a key's keyed hash only;
-- no names, e-mails or keys. Every gateway process shares it, so a change applied here before
-- a revocation answers holds for all of them at once.
--
-- Merged, not replaced: a row only ever becomes less able to authenticate (a key or an agent
-- inactive stays so) except a tenant's status, which takes the newest version of the tenant's
-- stream. So the route that made a change, accounts' event of it and a rebuild's page can
-- arrive in any order and leave the same rows.

CREATE TABLE credential_tenants (
    tenant_id uuid PRIMARY KEY,
    status    text   NOT NULL CHECK (status IN ('active', 'cancelled', 'destroyed')),
    version   bigint NOT NULL
);

CREATE TABLE credential_agents (
    agent_id    uuid PRIMARY KEY,
    tenant_id   uuid    NOT NULL,
    role        text,               -- unknown for an agent only heard of as deactivated
    active      boolean NOT NULL,
    admin_since timestamptz         -- when an admin became one (four eyes)
);
CREATE INDEX credential_agents_tenant ON credential_agents (tenant_id);

CREATE TABLE credential_keys (
    key_id    uuid PRIMARY KEY,
    -- HMAC-SHA-256 of the key under the platform's API key secret; dropped when the key ends.
    key_hash  text UNIQUE,
    agent_id  uuid    NOT NULL,
    issuer_id uuid,                 -- whom the key answers to (four eyes)
    issued_at timestamptz,
    active    boolean NOT NULL,
    CHECK (key_hash IS NULL OR active)
);
CREATE INDEX credential_keys_agent ON credential_keys (agent_id);

-- One row: 'stale' until built (a new deployment, or an operator asking for a rebuild),
-- 'rebuilding' while a gateway process rebuilds it from accounts, 'ready' after. Anything but
-- 'ready' refuses every key (503).
--
-- ``reconciled_at``: when the rows were last brought in line with accounts (a rebuild, or a
-- reconciliation, which refuses nothing meanwhile): every gateway process reconciles before it
-- serves (a database restored from a backup holds keys revoked since), and one of them every
-- hour after the last.
CREATE TABLE credential_projection (
    one           boolean PRIMARY KEY DEFAULT true CHECK (one),
    status        text NOT NULL CHECK (status IN ('stale', 'rebuilding', 'ready')),
    changed_at    timestamptz NOT NULL DEFAULT now(),
    reconciled_at timestamptz
);
INSERT INTO credential_projection (status) VALUES ('stale');
