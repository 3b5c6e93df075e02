-- Mail owed to requesters (kernel/mail/outbox.py): one row per mail, written in the transaction
-- of the public reply it carries. The rendered message, with its envelope, is sealed under the
-- ticket's key (a child of the requester's): the requester's erasure makes a queued mail
-- unreadable, and the erasure handler deletes the rows. No other column holds an address, a
-- subject or a text; the sealed text is dropped when the mail is sent or fails for good, and
-- the row goes LEDGERDESK_MAIL_KEEP_DAYS later.
CREATE TABLE mail_outbox (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL,
    -- Whom, by id (the requester), and whose key seals the text (the ticket).
    recipient_id     uuid NOT NULL,
    key_subject_id   uuid NOT NULL,
    kind             text NOT NULL,
    -- What the mail carries (the ticket message), by id.
    reference_id     uuid,
    -- The Message-ID header, from ids only: the same at every attempt, unique per mail.
    message_id       text NOT NULL UNIQUE,
    sealed           bytea,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'sent', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz,
    last_code        integer,
    last_outcome     text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    CHECK ((status = 'pending') = (sealed IS NOT NULL)),
    CHECK ((status = 'pending') = (next_attempt_at IS NOT NULL))
);
-- The sender's claim: due pending mails, oldest due first.
CREATE INDEX mail_outbox_due ON mail_outbox (next_attempt_at) WHERE status = 'pending';
-- An erasure: the rows of a recipient, and those sealed under a purged ticket's key.
CREATE INDEX mail_outbox_recipient ON mail_outbox (recipient_id);
CREATE INDEX mail_outbox_key_subject ON mail_outbox (key_subject_id);
CREATE INDEX mail_outbox_tenant ON mail_outbox (tenant_id);
-- The purge of finished rows.
CREATE INDEX mail_outbox_finished ON mail_outbox (finished_at) WHERE status <> 'pending';
