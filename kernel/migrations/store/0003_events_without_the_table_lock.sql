-- Appends no longer take the events table's EXCLUSIVE lock (kernel.eventstore): writers of
-- different streams and tenants proceed together. ``position`` is still drawn at insert, so
-- positions now commit out of order; catch-up readers order by (tx_order, position) instead and
-- read only below the oldest transaction still running, below which no row can appear any more.
--
-- tx_order: the appending transaction's id (pg_current_xact_id), raised by the append to the
-- highest tx_order already committed, so an event sorts after every event its writer could have
-- read. Rows stored before this migration keep 0: they sort before every new one, in position
-- order, which was their commit order. A constant default adds the column without rewriting the
-- table (the immutability triggers are row triggers on UPDATE, not fired here); it is dropped
-- at once, so that a row inserted without a tx_order is known as such.
ALTER TABLE events ADD COLUMN tx_order bigint NOT NULL DEFAULT 0;
ALTER TABLE events ALTER COLUMN tx_order DROP DEFAULT;

-- A row inserted without a tx_order (a writer of the release before this one, during a rolling
-- upgrade, or a row inserted by hand) gets one by the append's own rule: its transaction's id
-- raised to the highest committed. With its transaction's id alone, a writer of the old release
-- whose id was drawn early could store version 2 of a stream before version 1 in the order for
-- good, and every later rebuild would replay them so. Fired only for such rows (the WHEN), so the
-- append, which names its tx_order, pays nothing; a BEFORE trigger runs before NOT NULL is checked.
CREATE FUNCTION events_tx_order() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.tx_order := greatest(
        pg_current_xact_id()::text::bigint,
        (SELECT coalesce(max(tx_order), 0) FROM events)
    );
    RETURN NEW;
END
$$;
CREATE TRIGGER events_tx_order BEFORE INSERT ON events
    FOR EACH ROW WHEN (NEW.tx_order IS NULL) EXECUTE FUNCTION events_tx_order();

CREATE INDEX events_order ON events (tx_order, position);
CREATE INDEX events_tenant_order ON events (tenant_id, tx_order, position);
DROP INDEX events_tenant;

COMMENT ON COLUMN events.position IS
    'drawn at insert: unique, but commits out of order; readers order by (tx_order, position)';

-- A rebuild's mark is the cursor of the last event it replayed: both halves.
ALTER TABLE projection_state ADD COLUMN tx_order bigint NOT NULL DEFAULT 0;
