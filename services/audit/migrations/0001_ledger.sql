-- The audit ledger: append-only at the database level, hash-chained, checkpointed.

CREATE TABLE ledger (
    seq          bigint PRIMARY KEY CHECK (seq > 0),
    -- One entry per message, however often the broker redelivers it.
    event_id     uuid NOT NULL UNIQUE,
    type         text NOT NULL,
    service      text NOT NULL,
    tenant_id    uuid,
    actor_id     text,
    subject_ids  text[] NOT NULL,
    at           timestamptz NOT NULL,
    -- The calendar month whose key encrypts this entry's access-log fields (IP, user agent).
    month        text NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    -- The canonical bytes that are hashed: stored as bytes, so no re-encoding can change them.
    content      bytea NOT NULL,
    prev_hash    bytea NOT NULL,
    hash         bytea NOT NULL,
    leaf_hash    bytea NOT NULL
);
CREATE INDEX ledger_tenant ON ledger (tenant_id, seq);
CREATE INDEX ledger_type ON ledger (type, seq);
CREATE INDEX ledger_at ON ledger (at);
CREATE INDEX ledger_subjects ON ledger USING gin (subject_ids);

CREATE TABLE checkpoints (
    tree_size   bigint PRIMARY KEY,
    root_hash   bytea NOT NULL,
    signed_at   text NOT NULL,
    key_id      text NOT NULL,
    public_key  text NOT NULL,
    signature   bytea NOT NULL
);

-- Refused by the database itself, not only by the code: history is never rewritten.
CREATE FUNCTION ledger_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit ledger is append-only (% on % refused)', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER ledger_no_change BEFORE UPDATE OR DELETE ON ledger
    FOR EACH ROW EXECUTE FUNCTION ledger_is_append_only();
CREATE TRIGGER ledger_no_truncate BEFORE TRUNCATE ON ledger
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_is_append_only();
CREATE TRIGGER checkpoints_no_change BEFORE UPDATE OR DELETE ON checkpoints
    FOR EACH ROW EXECUTE FUNCTION ledger_is_append_only();
CREATE TRIGGER checkpoints_no_truncate BEFORE TRUNCATE ON checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_is_append_only();
