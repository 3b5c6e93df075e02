-- Moving a tenant between region cells (services.tenant_move): each move's progress, durable so
-- an interrupted move resumes at its recorded step or rolls back; ids, regions and step names
-- only (``detail`` is the mover's own words, never a tenant's data).
CREATE TABLE tenant_moves (
    tenant_id    uuid PRIMARY KEY,
    source       text NOT NULL,
    target       text NOT NULL,
    step         text NOT NULL CHECK (step IN ('frozen', 'copied', 'verified', 'ledger_moved',
                                               'cut_over', 'source_destroyed', 'done',
                                               'rolled_back')),
    started_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    outcome      text CHECK (outcome IN ('done', 'rolled_back')),
    detail       text
);

-- The keyed hashes (HMAC under the platform's API key secret) of a moved tenant's API keys: the
-- router finds the tenant of a presented key here, to refuse it during the move's window (503)
-- and to send it to the tenant's new cell after (a key names the region it was issued in).
CREATE TABLE moved_keys (
    key_hash   text PRIMARY KEY,
    tenant_id  uuid NOT NULL
);
CREATE INDEX moved_keys_tenant ON moved_keys (tenant_id);

-- The router refreshes its map of moved keys when told.
CREATE FUNCTION moves_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tenant_moves', '');
    RETURN NULL;
END $$;
CREATE TRIGGER tenant_moves_changed AFTER INSERT OR UPDATE OR DELETE ON tenant_moves
    FOR EACH STATEMENT EXECUTE FUNCTION moves_notify();
CREATE TRIGGER moved_keys_changed AFTER INSERT OR UPDATE OR DELETE ON moved_keys
    FOR EACH STATEMENT EXECUTE FUNCTION moves_notify();
