-- An open request nearing its deadline is announced once (privacy_request_due_soon: the
-- tenant's admins are mailed, so a request awaiting approval or a service's answer can still be
-- seen to before it fails): when it was, so it is not announced again.
ALTER TABLE requests ADD COLUMN due_soon_at timestamptz;
CREATE INDEX requests_open_due ON requests (due_at)
    WHERE status IN ('pending', 'awaiting_approval') AND due_soon_at IS NULL;
