-- The search index (services/tickets/search_index.py): for each part of a ticket (its subject,
-- its body, each message), a keyed hash of each word and of its first letters, under a key
-- derived from the tenant's in the keystore: never a word. A read model like the others, written
-- in the transaction of the event it comes from and rebuilt from the events by replay; the
-- service fills it when it first starts on this migration (it cannot be computed here: the
-- keys live in another database).
CREATE TABLE search_terms (
    ticket_id     uuid NOT NULL,
    tenant_id     uuid NOT NULL,
    -- Whose erasure ends the row: the ticket's requester (its words are under a child of
    -- their key), and for a message written before tickets had keys of their own (under its
    -- writer's key) its writer as well.
    requester_id  uuid NOT NULL,
    author_id     uuid,
    part          text NOT NULL CHECK (part IN ('subject', 'body', 'message')),
    message_id    uuid,
    internal      boolean NOT NULL,
    digest        bytea NOT NULL CHECK (octet_length(digest) = 16),
    CHECK ((part = 'message') = (message_id IS NOT NULL)),
    CHECK (NOT internal OR part = 'message'),
    UNIQUE NULLS NOT DISTINCT (ticket_id, part, message_id, digest)
);
-- A search: the tenant's rows of a few digests, with what ranking and visibility need.
CREATE INDEX search_terms_find ON search_terms (tenant_id, digest) INCLUDE (ticket_id, internal);
-- An erasure: a requester's rows, and the few a writer's key holds.
CREATE INDEX search_terms_requester ON search_terms (requester_id);
CREATE INDEX search_terms_author ON search_terms (author_id) WHERE author_id IS NOT NULL;
