-- Inbound mail's idempotency records (services.tickets.mail_in): a relay that re-sends a mail
-- already stored (its 250 lost, say) finds it here and makes no second ticket. The key is a
-- keyed hash, under the tenant's blind-index key, of the sender's address and the mail's
-- Message-ID: neither is kept. Deleted after LEDGERDESK_MAIL_IN_DEDUP_DAYS, with the
-- requester's erasure, the ticket's purge, and the tenant's destruction.
CREATE TABLE mail_in_received (
    tenant_id     uuid NOT NULL,
    digest        bytea NOT NULL,
    ticket_id     uuid NOT NULL,
    requester_id  uuid NOT NULL,
    message_id    uuid,
    received_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, digest)
);
CREATE INDEX mail_in_received_at ON mail_in_received (received_at);
CREATE INDEX mail_in_received_ticket ON mail_in_received (ticket_id);
CREATE INDEX mail_in_received_requester ON mail_in_received (tenant_id, requester_id);
