-- The checkpoint tree as it grows: the hash of every perfect subtree above the leaves (a leaf is
-- ledger.leaf_hash), stored in the same transaction as the entry that completes it. A root, an
-- inclusion proof or a consistency proof then reads O(log n) rows instead of every leaf.
-- (level, idx) covers leaves [idx * 2^level, (idx + 1) * 2^level), i.e. seqs idx * 2^level + 1
-- up to (idx + 1) * 2^level, the entry that completes it.
CREATE TABLE ledger_nodes (
    level  smallint NOT NULL CHECK (level BETWEEN 1 AND 62),
    idx    bigint NOT NULL CHECK (idx >= 0),
    hash   bytea NOT NULL,
    PRIMARY KEY (level, idx)
);
-- The verification job reads the nodes in the order the entries complete them.
CREATE INDEX ledger_nodes_completed ON ledger_nodes (((idx + 1) << level), level);

CREATE TRIGGER ledger_nodes_no_change BEFORE UPDATE OR DELETE ON ledger_nodes
    FOR EACH ROW EXECUTE FUNCTION ledger_is_append_only();
CREATE TRIGGER ledger_nodes_no_truncate BEFORE TRUNCATE ON ledger_nodes
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_is_append_only();

-- The nodes of the entries recorded so far, level by level from the stored leaf hashes (RFC 6962
-- interior node: SHA-256(0x01 || left || right)).
INSERT INTO ledger_nodes (level, idx, hash)
    SELECT 1, l.seq / 2, sha256('\x01'::bytea || l.leaf_hash || r.leaf_hash)
      FROM ledger l JOIN ledger r ON r.seq = l.seq + 1
     WHERE l.seq % 2 = 1;

DO $$
DECLARE
    lvl smallint := 2;
    made bigint;
BEGIN
    LOOP
        INSERT INTO ledger_nodes (level, idx, hash)
            SELECT lvl, l.idx / 2, sha256('\x01'::bytea || l.hash || r.hash)
              FROM ledger_nodes l JOIN ledger_nodes r ON r.level = l.level AND r.idx = l.idx + 1
             WHERE l.level = lvl - 1 AND l.idx % 2 = 0;
        GET DIAGNOSTICS made = ROW_COUNT;
        EXIT WHEN made = 0;
        lvl := lvl + 1;
    END LOOP;
END $$;

-- Each run of the verification job (services.audit.ledger.Ledger.run_verification): what the
-- verify endpoints report, never computed on a request. A run that found everything intact
-- keeps the compact range of the leaves it walked, so the next run starts where it ended.
CREATE TABLE ledger_verifications (
    id                  bigserial PRIMARY KEY,
    started_at          timestamptz NOT NULL,
    finished_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- Whether this run walked from the first entry (else from the end of the last intact run).
    from_zero           boolean NOT NULL,
    ok                  boolean NOT NULL,
    entries             bigint NOT NULL,
    head_hash           bytea,
    first_bad_seq       bigint,
    first_bad_node_seq  bigint,
    checkpoints         integer NOT NULL,
    verified_size       bigint NOT NULL,
    compact_range       bytea[] NOT NULL
);
