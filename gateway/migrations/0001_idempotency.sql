-- Responses remembered per Idempotency-Key, so a client retrying a POST gets the first response
-- instead of a second effect. A row with a NULL status is a request still in progress.
--
-- A stored body can hold personal data, and sign-up's holds the new API key: rows are kept only
-- for the store's TTL (24 hours by default) and then deleted by IdempotencyStore.purge_expired,
-- so this table must never be backed up for longer than that either.

CREATE TABLE idempotency_keys (
    -- The tenant id, or 'signup' for the unauthenticated sign-up: one tenant's keys can never
    -- collide with, or reveal, another's.
    scope         text NOT NULL,
    key           text NOT NULL,
    -- SHA-256 of method, path and body: the same key reused for another request is refused.
    fingerprint   text NOT NULL,
    status        integer,
    headers       jsonb,
    body          bytea,
    created_at    timestamptz NOT NULL DEFAULT now(),
    completed_at  timestamptz,
    PRIMARY KEY (scope, key),
    -- A completed row has its whole response; an in-progress one has none of it.
    CONSTRAINT idempotency_complete_or_not CHECK (
        (status IS NULL) = (completed_at IS NULL)
        AND (status IS NULL) = (headers IS NULL)
        AND (status IS NULL) = (body IS NULL)
    )
);

-- The purge of expired rows looks them up by age.
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
