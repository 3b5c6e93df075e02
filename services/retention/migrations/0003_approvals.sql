-- Approval of data-subject requests where the tenant's policy asks for it: the request waits,
-- unsent, until another admin approves or denies it; the decision and its reason are kept.

ALTER TABLE requests
    ADD COLUMN decided_by       uuid,
    ADD COLUMN decided_at       timestamptz,
    ADD COLUMN decision         text CHECK (decision IN ('approved', 'denied')),
    ADD COLUMN decision_reason  text;

-- A request waiting for approval is open too: a second identical one returns it.
DROP INDEX requests_one_open;
CREATE UNIQUE INDEX requests_one_open ON requests (tenant_id, type, subject_id)
    WHERE status IN ('pending', 'awaiting_approval');
CREATE INDEX requests_tenant_status ON requests (tenant_id, status, created_at);

-- The request types that need an approval, per tenant (tenant_id NULL: the platform default).
CREATE TABLE approval_policies (
    tenant_id  uuid,
    types      text[] NOT NULL,
    UNIQUE NULLS NOT DISTINCT (tenant_id)
);
INSERT INTO approval_policies (tenant_id, types) VALUES (NULL, '{}');
