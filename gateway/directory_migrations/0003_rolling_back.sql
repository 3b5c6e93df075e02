-- A rollback records ``rolling_back`` before it deletes anything of the target's copy: a
-- rollback killed midway is then finished by ``rollback`` only, never resumed forward (which
-- would destroy the source's whole copy after a partial target's). The router refuses the
-- tenant meanwhile, as during the move.
ALTER TABLE tenant_moves DROP CONSTRAINT tenant_moves_step_check;
ALTER TABLE tenant_moves ADD CONSTRAINT tenant_moves_step_check
    CHECK (step IN ('frozen', 'copied', 'verified', 'ledger_moved', 'cut_over',
                    'source_destroyed', 'done', 'rolling_back', 'rolled_back'));
