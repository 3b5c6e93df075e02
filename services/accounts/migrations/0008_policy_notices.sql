-- A newly published policy version mailed to every agent who has not accepted it
-- (services/accounts/notices.py): one row per version, written in the publication's
-- transaction and worked through a page of agents per transaction (keyset by agent id), so
-- that many tenants never make one giant transaction and a restart resumes after the last
-- page committed. Each mail's Message-ID is per (agent, version): a page done twice queues
-- nothing twice. (0007 is breach notification's.)
CREATE TABLE policy_notice_jobs (
    version       text PRIMARY KEY,
    -- The policy_published event's id: what every mail of the version is about.
    reference_id  uuid NOT NULL,
    published_at  timestamptz NOT NULL,
    -- The last agent of the last page committed; NULL before the first page and once ended.
    after_agent   uuid,
    mailed        integer NOT NULL DEFAULT 0,
    status        text NOT NULL DEFAULT 'running'
                  CHECK (status IN ('running', 'done', 'superseded')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    CHECK ((status = 'running') = (finished_at IS NULL)),
    CHECK (status = 'running' OR after_agent IS NULL)
);
CREATE INDEX policy_notice_jobs_running ON policy_notice_jobs (created_at)
    WHERE status = 'running';
