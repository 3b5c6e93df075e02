-- Whom each API key answers to for four eyes: the person who may hold it besides its agent
-- (see the api_key_issued event, version 2). NULL for keys issued before it was recorded,
-- which answer to their agent, as every key did before.
ALTER TABLE api_keys ADD COLUMN issuer_id uuid;
