-- The event store, the outbox and the inbox of one service.

CREATE TABLE events (
    -- Assigned while the append holds the table's EXCLUSIVE lock, so positions become visible
    -- in commit order and a catch-up reader that saw position N never later finds N-1.
    position        bigserial NOT NULL,
    event_id        uuid NOT NULL UNIQUE,
    stream_id       text NOT NULL,
    stream_version  integer NOT NULL CHECK (stream_version > 0),
    type            text NOT NULL,
    source          text NOT NULL,
    schema_version  integer NOT NULL CHECK (schema_version > 0),
    tenant_id       uuid,
    occurred_at     timestamptz NOT NULL,
    actor_id        text,
    trace           jsonb NOT NULL DEFAULT '{}',
    payload         jsonb NOT NULL,
    metadata        jsonb NOT NULL DEFAULT '{}',
    -- The last guard of optimistic concurrency: two writers can never both own a version.
    PRIMARY KEY (stream_id, stream_version)
);
CREATE UNIQUE INDEX events_position ON events (position);
CREATE INDEX events_tenant ON events (tenant_id, position);

-- History is never rewritten: erasure destroys keys, not rows.
CREATE FUNCTION events_are_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the event store is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER events_no_update BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_are_immutable();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_are_immutable();

CREATE TABLE outbox (
    id            bigserial PRIMARY KEY,
    event_id      uuid NOT NULL UNIQUE,
    stream_id     text NOT NULL,
    exchange      text NOT NULL,
    routing_key   text NOT NULL,
    body          text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz,
    attempts      integer NOT NULL DEFAULT 0,
    last_error    text
);
-- The relay reads every unpublished row, not rows after a remembered id: ids commit out of
-- order under concurrent writers, and a high-water mark would skip the late ones.
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_inserted AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

CREATE TABLE inbox (
    consumer    text NOT NULL,
    message_id  uuid NOT NULL,
    handled_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);

CREATE TABLE projection_state (
    name         text PRIMARY KEY,
    position     bigint NOT NULL DEFAULT 0,
    rebuilt_at   timestamptz
);
