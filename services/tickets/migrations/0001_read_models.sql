-- Tickets' read models, rebuilt from the event store by replay at any time.

CREATE TABLE tickets (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL,
    requester_id  uuid NOT NULL,
    subject       text NOT NULL,
    body          text NOT NULL,
    status        text NOT NULL,
    priority      text NOT NULL,
    assignee_id   uuid,
    tags          text[] NOT NULL,
    version       integer NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);
CREATE INDEX tickets_page ON tickets (tenant_id, created_at, id);
CREATE INDEX tickets_status ON tickets (tenant_id, status);
CREATE INDEX tickets_assignee ON tickets (tenant_id, assignee_id);
CREATE INDEX tickets_requester ON tickets (tenant_id, requester_id);

CREATE TABLE ticket_messages (
    id           uuid PRIMARY KEY,
    ticket_id    uuid NOT NULL,
    tenant_id    uuid NOT NULL,
    author_id    uuid NOT NULL,
    author_kind  text NOT NULL,
    body         text NOT NULL,
    internal     boolean NOT NULL,
    created_at   timestamptz NOT NULL,
    seq          integer NOT NULL
);
CREATE INDEX ticket_messages_ticket ON ticket_messages (ticket_id, seq);

-- Who exists, learned from accounts' events (never from accounts' database). ``version`` is
-- the subject's stream version in accounts: an older event never overwrites a newer one.
CREATE TABLE directory (
    subject_id  uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL,
    kind        text NOT NULL,
    active      boolean NOT NULL,
    version     integer NOT NULL
);
