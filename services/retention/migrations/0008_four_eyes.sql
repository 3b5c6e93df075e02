-- Four eyes that hold: who stands behind a filing (the filer and whom the filer's key answers
-- to), and lifting or narrowing an approval policy as a change another admin decides.

-- NULL for requests filed before it was recorded: the filer alone stands behind them.
ALTER TABLE requests ADD COLUMN filed_key_issuer uuid;

-- A change that lifts or narrows a tenant's approval policy, waiting for another admin, with
-- the policy it was filed against (based_on).
CREATE TABLE approval_policy_changes (
    id                      uuid PRIMARY KEY,
    tenant_id               uuid NOT NULL,
    types                   text[] NOT NULL,
    based_on                text[] NOT NULL,
    filed_by                uuid NOT NULL,
    filed_key_issuer        uuid NOT NULL,
    status                  text NOT NULL
        CHECK (status IN ('awaiting_approval', 'approved', 'denied', 'superseded')),
    created_at              timestamptz NOT NULL,
    decided_by              uuid,
    decided_at              timestamptz,
    decision_reason_sealed  text CHECK (decision_reason_sealed LIKE '{"$enc":%')
);
-- One change waits at a time: a newer filing or an applied change supersedes it.
CREATE UNIQUE INDEX approval_policy_changes_one_open ON approval_policy_changes (tenant_id)
    WHERE status = 'awaiting_approval';
CREATE INDEX approval_policy_changes_page ON approval_policy_changes (tenant_id, created_at, id);
