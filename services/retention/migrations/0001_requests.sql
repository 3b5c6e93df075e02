-- Retention's registry of services and its data-subject requests, as a persisted plan: each
-- service's part is stored before the command leaves, and every answer is recorded.

CREATE TABLE services (
    name              text PRIMARY KEY,
    categories        jsonb NOT NULL,
    commands          jsonb NOT NULL,
    protocol_version  integer NOT NULL,
    announced_at      timestamptz NOT NULL
);

CREATE TABLE requests (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL,
    type            text NOT NULL,
    subject_kind    text NOT NULL,
    subject_id      uuid NOT NULL,
    filed_by        uuid NOT NULL,
    identity_check  text NOT NULL,
    status          text NOT NULL,
    created_at      timestamptz NOT NULL,
    due_at          timestamptz NOT NULL,
    completed_at    timestamptz,
    receipt         jsonb
);
CREATE INDEX requests_tenant ON requests (tenant_id, created_at);
-- A second identical open request returns the first: the database keeps it to one.
CREATE UNIQUE INDEX requests_one_open ON requests (tenant_id, type, subject_id)
    WHERE status = 'pending';

CREATE TABLE request_services (
    request_id       uuid NOT NULL REFERENCES requests,
    service          text NOT NULL,
    status           text NOT NULL,
    detail           text,
    basis            text,
    until            text,
    answer_event_id  uuid,
    answered_at      timestamptz,
    PRIMARY KEY (request_id, service)
);
