-- Appends no longer take the events table's EXCLUSIVE lock (kernel.eventstore): writers of
-- different streams and tenants proceed together. ``position`` is still drawn at insert, so
-- positions now commit out of order; catch-up readers order by (tx_order, position) instead and
-- read only below the oldest transaction still running, below which no row can appear any more.
--
-- tx_order: the appending transaction's id (pg_current_xact_id), raised by the append to the
-- highest tx_order already committed, so an event sorts after every event its writer could have
-- read. Rows stored before this migration keep 0: they sort before every new one, in position
-- order, which was their commit order. A constant default adds the column without rewriting the
-- table (the immutability triggers are row triggers on UPDATE, not fired here); the default that
-- follows serves a row inserted by hand.
ALTER TABLE events ADD COLUMN tx_order bigint NOT NULL DEFAULT 0;
ALTER TABLE events ALTER COLUMN tx_order SET DEFAULT pg_current_xact_id()::text::bigint;

CREATE INDEX events_order ON events (tx_order, position);
CREATE INDEX events_tenant_order ON events (tenant_id, tx_order, position);
DROP INDEX events_tenant;

COMMENT ON COLUMN events.position IS
    'drawn at insert: unique, but commits out of order; readers order by (tx_order, position)';

-- A rebuild's mark is the cursor of the last event it replayed: both halves.
ALTER TABLE projection_state ADD COLUMN tx_order bigint NOT NULL DEFAULT 0;
