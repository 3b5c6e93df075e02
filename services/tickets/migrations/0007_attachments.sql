-- Attachments (services/tickets/attachment_store.py): files on messages, kept here in chunks
-- of at most 256 KiB, each sealed under the ticket's key (a child of its requester's), so
-- erasing the requester, purging the ticket or destroying the tenant leaves them unreadable;
-- the rows are deleted then too, so no ciphertext lingers. Not a read model: the bytes are in
-- no event (an event store is append-only, and a file has no place in an event), so these rows
-- are never truncated by a rebuild.
CREATE TABLE attachments (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL,
    ticket_id     uuid NOT NULL,
    -- Whose erasure ends the row: the ticket's requester, the parent of the ticket's key.
    requester_id  uuid NOT NULL,
    uploaded_by   uuid NOT NULL,
    -- The message it is on; null until a message names it (an upload not yet on a message,
    -- deleted a day after it was uploaded if none does).
    message_id    uuid,
    -- Stored encrypted fields (kernel.crypto.fields.stored_json), under the ticket's key:
    -- null until the upload is complete.
    filename      text,
    sha256        text,
    -- What the file's first bytes say it is (services/tickets/sniff.py), never what the
    -- client claimed; null until the first chunk.
    content_type  text,
    size          bigint NOT NULL DEFAULT 0 CHECK (size >= 0),
    chunks        integer NOT NULL DEFAULT 0 CHECK (chunks >= 0),
    state         text NOT NULL DEFAULT 'uploading' CHECK (state IN ('uploading', 'stored')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (state = 'uploading' OR (filename IS NOT NULL AND sha256 IS NOT NULL)),
    CHECK (message_id IS NULL OR state = 'stored')
);
CREATE INDEX attachments_ticket ON attachments (ticket_id);
CREATE INDEX attachments_message ON attachments (message_id) WHERE message_id IS NOT NULL;
CREATE INDEX attachments_requester ON attachments (requester_id);
CREATE INDEX attachments_tenant ON attachments (tenant_id);
CREATE INDEX attachments_unattached ON attachments (created_at) WHERE message_id IS NULL;

CREATE TABLE attachment_chunks (
    attachment_id uuid NOT NULL REFERENCES attachments (id) ON DELETE CASCADE,
    seq           integer NOT NULL CHECK (seq >= 0),
    -- AES-256-GCM under the ticket's key, bound to the attachment and seq (kernel.crypto.blobs).
    ciphertext    bytea NOT NULL,
    PRIMARY KEY (attachment_id, seq)
);
