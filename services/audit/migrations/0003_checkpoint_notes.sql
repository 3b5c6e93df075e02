-- Checkpoints are also signed notes in the C2SP tlog-checkpoint form, so that an auditor can
-- check an export with the public key alone, and any transparency-log verifier can read them.
-- The note carries the time of signing in a "signed-at" extension line: a key's validity period
-- is judged by it. Rows signed before this migration have no note (NULL) and still verify by
-- their v1 signature, which new rows keep too.
ALTER TABLE checkpoints ADD COLUMN note text;
