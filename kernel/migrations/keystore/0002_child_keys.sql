-- Child subject keys: a subject key may be wrapped under another subject's key (its parent)
-- instead of under the tenant key. A ticket's text is encrypted under a key of its own, wrapped
-- under its requester's key, so one ticket can be erased by destroying its key, and erasing the
-- requester destroys one key, the parent's, which leaves every child key without anything that
-- opens it: constant time whatever the number of tickets. Child rows are not touched by that
-- erasure; they stay as wrapped keys nobody can unwrap.
--
-- NULL for a top-level subject, whose key the tenant key wraps as before, so existing rows need
-- no change.
ALTER TABLE subject_keys
    ADD COLUMN parent_id uuid NULL REFERENCES subject_keys (subject_id),
    ADD CONSTRAINT subject_key_not_its_own_parent CHECK (parent_id <> subject_id);

-- Finds a subject's children (what erasing it reached), and spares the foreign key a table scan
-- should a referenced row ever be deleted; top-level rows, the most, stay out of it.
CREATE INDEX subject_keys_parent ON subject_keys (parent_id) WHERE parent_id IS NOT NULL;

-- One level only, same tenant, parent fixed at creation. The keystore code checks all of this
-- under a lock on the parent row; the trigger is the last guard, so a bug or a hand-written
-- INSERT cannot make a grandchild, whose erasure would depend on two keys being destroyed, or a
-- child of another tenant, which shred_tenant would miss.
CREATE FUNCTION subject_keys_check_parent() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    parent subject_keys%ROWTYPE;
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.parent_id IS DISTINCT FROM OLD.parent_id THEN
        RAISE EXCEPTION 'the parent of subject key % cannot change', OLD.subject_id;
    END IF;
    IF TG_OP = 'INSERT' AND NEW.parent_id IS NOT NULL THEN
        SELECT * INTO parent FROM subject_keys WHERE subject_id = NEW.parent_id;
        -- A missing parent is left to the foreign key, which reports it.
        IF FOUND AND parent.parent_id IS NOT NULL THEN
            RAISE EXCEPTION 'subject key % is itself a child: keys nest one level only',
                NEW.parent_id;
        END IF;
        IF FOUND AND parent.tenant_id <> NEW.tenant_id THEN
            RAISE EXCEPTION 'subject key % belongs to another tenant than its child %',
                NEW.parent_id, NEW.subject_id;
        END IF;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER subject_keys_check_parent
    BEFORE INSERT OR UPDATE OF parent_id ON subject_keys
    FOR EACH ROW EXECUTE FUNCTION subject_keys_check_parent();
