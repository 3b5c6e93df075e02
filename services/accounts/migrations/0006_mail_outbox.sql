-- Notices mailed to a tenant's agents and admins (kernel/mail/outbox.py, services/accounts/
-- notices.py): one row per mail, written in the transaction that makes it owed. The rendered
-- message, with its envelope, is sealed under the recipient agent's own key: their erasure
-- makes a queued mail unreadable, and the erasure handler deletes the rows; the tenant's
-- destruction deletes the tenant's. No other column holds an address, a subject or a text; the
-- sealed text is dropped when the mail is sent or fails for good, and the row goes
-- LEDGERDESK_MAIL_KEEP_DAYS later. The same table as tickets' (0008), for the same sender.
CREATE TABLE mail_outbox (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL,
    -- Whom, by id (the agent), and whose key seals the text (the same agent).
    recipient_id     uuid NOT NULL,
    key_subject_id   uuid NOT NULL,
    kind             text NOT NULL,
    -- What the notice is about, by id (a privacy request, a policy version's publication).
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
-- An erasure: the rows of a recipient; a destruction: the tenant's.
CREATE INDEX mail_outbox_recipient ON mail_outbox (recipient_id);
CREATE INDEX mail_outbox_tenant ON mail_outbox (tenant_id);
-- The purge of finished rows.
CREATE INDEX mail_outbox_finished ON mail_outbox (finished_at) WHERE status <> 'pending';
