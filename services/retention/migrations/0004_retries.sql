-- Commands re-sent with backoff: a service that has not answered (its command lost, say, or
-- dead-lettered) or answered `failed` gets the command again until the request's deadline.

ALTER TABLE request_services
    ADD COLUMN attempts         integer NOT NULL DEFAULT 0,
    ADD COLUMN last_sent_at     timestamptz,
    ADD COLUMN next_attempt_at  timestamptz;
CREATE INDEX request_services_retry ON request_services (next_attempt_at)
    WHERE status IN ('pending', 'failed');
