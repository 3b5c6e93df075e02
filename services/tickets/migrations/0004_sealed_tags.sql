-- A ticket's tags are words staff type freely ("vip-john-smith"): they are held as its subject
-- and body are, under the ticket's own key (``kernel.crypto.stored_json`` of the event's
-- encrypted field), so the requester's erasure and a closed-ticket purge reach them with it.
ALTER TABLE tickets
    ADD COLUMN tags_sealed  text CHECK (tags_sealed LIKE '{"$enc":%');

-- The plaintext column cannot be encrypted here (the keys live in another database, under a
-- master key from configuration): it is emptied, and new rows leave it to its default, empty
-- (an older replica still reads it during a rolling upgrade, so it stays NOT NULL). The tags of
-- existing tickets are in their events: the service records them again under each ticket's key
-- when it starts, and empties what an older replica writes here meanwhile
-- (services/tickets/sealed.py). The column is dropped by a later release, once no running
-- version writes it.
ALTER TABLE tickets ALTER COLUMN tags SET DEFAULT '{}';
UPDATE tickets SET tags = '{}' WHERE tags <> '{}';

-- What is left to seal: tickets whose tags an older release wrote.
CREATE INDEX tickets_unsealed ON tickets (id) WHERE tags_sealed IS NULL OR tags <> '{}';
