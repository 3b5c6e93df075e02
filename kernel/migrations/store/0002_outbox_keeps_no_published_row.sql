-- The relay deletes an outbox row once the broker confirmed it (kernel.relay) instead of
-- stamping published_at: a published body (the gateway's access events carry IP addresses and
-- user agents) must not outlive its publication. The rows older relays kept go now.
DELETE FROM outbox WHERE published_at IS NOT NULL;

-- The relay reads the whole table, short now, in primary-key order; the partial index only
-- cost every outbox insert an index entry.
DROP INDEX outbox_unpublished;

-- Not written any more, but not dropped in the release that stops writing it: a relay of the
-- previous release (mid rolling upgrade, or after a rollback) still reads and marks it, and
-- rows it marks are published again and deleted by this release's relay. The next release
-- drops it (docs/operations.md, "Upgrade, with migrations").
COMMENT ON COLUMN outbox.published_at IS
    'unused since store migration 0002 (rows are deleted once published); dropped next release';
