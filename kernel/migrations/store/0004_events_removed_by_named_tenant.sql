-- A tenant moved to another region cell leaves nothing of itself behind (services.tenant_move),
-- and a move rolled back removes the target's copy: the one deletion the event store takes.
-- It must be a deliberate, named act: the deleting transaction names the tenant with
-- ``SET LOCAL ledgerdesk.removing_tenant = '<tenant id>'``, and only that tenant's rows go.
-- Every other UPDATE or DELETE, and TRUNCATE, is refused as before.
CREATE OR REPLACE FUNCTION events_are_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND OLD.tenant_id IS NOT NULL
       AND OLD.tenant_id::text = current_setting('ledgerdesk.removing_tenant', true) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'the event store is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
