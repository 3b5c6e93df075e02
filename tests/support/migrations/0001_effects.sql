-- No unique key on purpose: a duplicate effect must be countable, not prevented here.
CREATE TABLE effects (
    event_id        uuid NOT NULL,
    stream_id       text NOT NULL,
    stream_version  integer NOT NULL,
    handled_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE duplicates (
    event_id  uuid NOT NULL,
    seen_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
