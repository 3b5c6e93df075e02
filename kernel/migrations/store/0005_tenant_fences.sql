-- A tenant being moved between region cells (services.tenant_move) is fenced in both cells for
-- the move's length: no event of it may be appended, whichever way a write arrives (a request
-- routed before the router took the move in, a cell's own timers and mail listener, an operator
-- call). The copy is then of a history nothing adds to, so nothing written during the move is
-- lost with the source's copy. The append raises LD001, which the event store turns into
-- ``TenantMoving`` (503 with Retry-After at the gateway). The mover's own copy into the target,
-- fenced too until the cut-over, names the tenant it imports
-- (``SET LOCAL ledgerdesk.moving_tenant = '<tenant id>'``) and passes.
CREATE TABLE tenant_fences (
    tenant_id  uuid PRIMARY KEY,
    fenced_at  timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION events_fenced() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.tenant_id IS NOT NULL
       AND NEW.tenant_id::text IS DISTINCT FROM current_setting('ledgerdesk.moving_tenant', true)
       AND EXISTS (SELECT 1 FROM tenant_fences WHERE tenant_id = NEW.tenant_id) THEN
        RAISE EXCEPTION 'the tenant is being moved to another region'
            USING ERRCODE = 'LD001';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER events_fenced BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION events_fenced();

-- The one deletion of events (store migration 0004) now also needs the tenant's fence: a
-- session that names a tenant (``SET``, not ``SET LOCAL``, or a role's default) deletes nothing
-- of a tenant no move has fenced.
CREATE OR REPLACE FUNCTION events_are_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND OLD.tenant_id IS NOT NULL
       AND OLD.tenant_id::text = current_setting('ledgerdesk.removing_tenant', true)
       AND EXISTS (SELECT 1 FROM tenant_fences WHERE tenant_id = OLD.tenant_id) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'the event store is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
