-- Exact lookups without plaintext: a blind index of people (services/accounts/lookups.py). Per
-- person and kind of value (contact_email, contact_phone, agent_email), the HMAC-SHA-256 of the
-- normalised value under a key derived from the tenant's, which lives in the keystore: never the
-- value. A read model like the others, rebuilt from the events by replay; the service fills it
-- when it first starts on this migration (it cannot be computed here: the keys live in another
-- database, under a master key from configuration).
CREATE TABLE lookup_digests (
    subject_id  uuid NOT NULL,
    kind        text NOT NULL,
    tenant_id   uuid NOT NULL,
    digest      bytea NOT NULL,
    PRIMARY KEY (subject_id, kind)
);
CREATE INDEX lookup_digests_find ON lookup_digests (tenant_id, kind, digest);

-- Contacts changed since a moment, in the order they changed (?updated_since=, for clients
-- that keep a copy in step).
CREATE INDEX contacts_changed ON contacts (tenant_id, updated_at, id);
