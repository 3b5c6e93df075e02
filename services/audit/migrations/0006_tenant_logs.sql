-- A log per tenant (issue 23): its own gap-free sequence, hash chain and Merkle tree, so one
-- tenant's proofs and verification read its own entries only, and appends of different tenants
-- lock different rows instead of one lock for the platform. Entries with no tenant (platform
-- events) go in the log of the nil uuid. The single chain of earlier releases (ledger,
-- ledger_nodes, checkpoints) stays as it is: a frozen segment that every platform checkpoint
-- commits to by its size and root, verifiable as before.

-- Each log's head: the row an append locks (FOR UPDATE), and the compact range of its tree so an
-- append reads O(log n) hashes. A cache of what the entries hold, rewritten by every append:
-- verification never trusts it.
CREATE TABLE log_heads (
    tenant_id      uuid PRIMARY KEY,
    size           bigint NOT NULL DEFAULT 0 CHECK (size >= 0),
    head_hash      bytea NOT NULL,
    compact_range  bytea[] NOT NULL DEFAULT '{}'
);

CREATE TABLE log_entries (
    tenant_id    uuid NOT NULL,
    seq          bigint NOT NULL CHECK (seq > 0),
    event_id     uuid NOT NULL UNIQUE,
    type         text NOT NULL,
    service      text NOT NULL,
    actor_id     text,
    subject_ids  text[] NOT NULL,
    at           timestamptz NOT NULL,
    access_key   text,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    content      bytea NOT NULL,
    prev_hash    bytea NOT NULL,
    hash         bytea NOT NULL,
    leaf_hash    bytea NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);
CREATE INDEX log_entries_type ON log_entries (tenant_id, type, seq);
CREATE INDEX log_entries_at ON log_entries (at);
CREATE INDEX log_entries_subjects ON log_entries USING gin (subject_ids);

-- Each log's perfect subtrees, as ledger_nodes is for the frozen chain.
CREATE TABLE log_nodes (
    tenant_id  uuid NOT NULL,
    level      smallint NOT NULL CHECK (level BETWEEN 1 AND 62),
    idx        bigint NOT NULL CHECK (idx >= 0),
    hash       bytea NOT NULL,
    PRIMARY KEY (tenant_id, level, idx)
);

-- A signed platform checkpoint: the root of a Merkle tree over every log's head (sorted by
-- tenant id) and the frozen chain's size and root.
CREATE TABLE platform_checkpoints (
    number       bigint PRIMARY KEY CHECK (number > 0),
    logs         integer NOT NULL,
    root_hash    bytea NOT NULL,
    legacy_size  bigint NOT NULL,
    legacy_root  bytea NOT NULL,
    signed_at    text NOT NULL,
    key_id       text NOT NULL,
    public_key   text NOT NULL,
    signature    bytea NOT NULL
);

-- The heads a platform checkpoint commits to, one row per log: the leaves of its tree.
CREATE TABLE platform_checkpoint_heads (
    number     bigint NOT NULL,
    tenant_id  uuid NOT NULL,
    size       bigint NOT NULL,
    root_hash  bytea NOT NULL,
    head_hash  bytea NOT NULL,
    PRIMARY KEY (number, tenant_id)
);
-- A tenant's verification reads its own heads, checkpoint by checkpoint.
CREATE INDEX platform_checkpoint_heads_tenant ON platform_checkpoint_heads (tenant_id, number);

CREATE TRIGGER log_entries_no_change BEFORE UPDATE OR DELETE ON log_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_is_append_only();
CREATE TRIGGER log_entries_no_truncate BEFORE TRUNCATE ON log_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_is_append_only();
CREATE TRIGGER log_nodes_no_change BEFORE UPDATE OR DELETE ON log_nodes
    FOR EACH ROW EXECUTE FUNCTION ledger_is_append_only();
CREATE TRIGGER log_nodes_no_truncate BEFORE TRUNCATE ON log_nodes
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_is_append_only();
CREATE TRIGGER platform_checkpoints_no_change BEFORE UPDATE OR DELETE ON platform_checkpoints
    FOR EACH ROW EXECUTE FUNCTION ledger_is_append_only();
CREATE TRIGGER platform_checkpoints_no_truncate BEFORE TRUNCATE ON platform_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_is_append_only();
CREATE TRIGGER platform_checkpoint_heads_no_change BEFORE UPDATE OR DELETE
    ON platform_checkpoint_heads FOR EACH ROW EXECUTE FUNCTION ledger_is_append_only();
CREATE TRIGGER platform_checkpoint_heads_no_truncate BEFORE TRUNCATE
    ON platform_checkpoint_heads FOR EACH STATEMENT EXECUTE FUNCTION ledger_is_append_only();
