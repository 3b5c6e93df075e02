-- Billing's read models, rebuilt from the event store by replay at any time, and the sandbox
-- processor's own record of charges (what a real processor keeps on its side).

CREATE TABLE billing_accounts (
    tenant_id   uuid PRIMARY KEY,
    plan        text NOT NULL,
    region      text NOT NULL,
    company     text NOT NULL,
    address     jsonb,
    opened_at   timestamptz NOT NULL,
    version     integer NOT NULL
);

CREATE TABLE payment_methods (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL,
    brand       text NOT NULL,
    last4       text NOT NULL CHECK (last4 ~ '^[0-9]{4}$'),
    exp_month   integer NOT NULL,
    exp_year    integer NOT NULL,
    token       text NOT NULL,
    created_at  timestamptz NOT NULL
);
CREATE INDEX payment_methods_tenant ON payment_methods (tenant_id, created_at);

CREATE TABLE invoices (
    id                     uuid PRIMARY KEY,
    tenant_id              uuid NOT NULL,
    number                 text NOT NULL,
    period_start           date NOT NULL,
    period_end             date NOT NULL,
    currency               text NOT NULL,
    lines                  jsonb NOT NULL,
    subtotal               bigint NOT NULL,
    tax_rate               numeric NOT NULL,
    tax                    bigint NOT NULL,
    total                  bigint NOT NULL,
    company                text NOT NULL,
    address                jsonb,
    billing_contact_id     uuid NOT NULL,
    billing_contact_name   text NOT NULL,
    billing_contact_email  text NOT NULL,
    status                 text NOT NULL,
    issued_at              timestamptz NOT NULL,
    hold_until             date NOT NULL,
    paid_reference         text,
    -- Gap-free numbering per tenant is the account stream's doing; this is the last guard.
    UNIQUE (tenant_id, number)
);
CREATE INDEX invoices_page ON invoices (tenant_id, issued_at, id);
CREATE INDEX invoices_contact ON invoices (billing_contact_id);

-- Seats: active agents per tenant, learned from accounts' events.
CREATE TABLE billing_agents (
    agent_id   uuid PRIMARY KEY,
    tenant_id  uuid NOT NULL,
    active     boolean NOT NULL,
    version    integer NOT NULL
);
CREATE INDEX billing_agents_tenant ON billing_agents (tenant_id) WHERE active;

-- Data kept under a legal hold is restricted: used for nothing but the legal obligation.
CREATE TABLE restrictions (
    subject_id     uuid PRIMARY KEY,
    basis          text NOT NULL,
    until          date NOT NULL,
    restricted_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sandbox_charges (
    idempotency_key  text PRIMARY KEY,
    amount           bigint NOT NULL,
    currency         text NOT NULL,
    status           text NOT NULL,
    reference        text NOT NULL,
    charged_at       timestamptz NOT NULL DEFAULT now()
);
