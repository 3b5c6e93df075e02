-- When a ticket closed (closing is final), so a purge of closed tickets before a date finds
-- them; and when its words were erased by such a purge, so none is erased twice.
ALTER TABLE tickets
    ADD COLUMN closed_at  timestamptz,
    ADD COLUMN erased_at  timestamptz;
CREATE INDEX tickets_closed ON tickets (tenant_id, closed_at) WHERE erased_at IS NULL;
