-- The free text a request keeps (what the admin checked of the requester's identity, why a
-- request was approved or denied) may name someone: it is kept under the tenant's key in
-- retention's keystore (``kernel.crypto.stored_json`` of an encrypted field), shredded when
-- the tenant's destruction completes.
--
-- Existing rows cannot be encrypted here (the keys live in another database, under a master key
-- from configuration): retention seals them when it starts, and on every follow-up round (rows
-- an older replica writes during a rolling upgrade), moving the text into the sealed columns
-- and emptying the plaintext ones. Those are dropped by a later release, once no running
-- version writes them.
ALTER TABLE requests
    ADD COLUMN identity_check_sealed   text
        CHECK (identity_check_sealed LIKE '{"$enc":%'),
    ADD COLUMN decision_reason_sealed  text
        CHECK (decision_reason_sealed LIKE '{"$enc":%'),
    ALTER COLUMN identity_check DROP NOT NULL;

CREATE INDEX requests_unsealed ON requests (id)
    WHERE identity_check IS NOT NULL OR decision_reason IS NOT NULL;
