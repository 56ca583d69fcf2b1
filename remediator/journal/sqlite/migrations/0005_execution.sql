-- Execution of plans: who claimed a remediation, when it finished, and each step
-- journaled before and after it runs (the timeline). A step started but never
-- finished is how a crash in the middle of a mutation is recognised on restart.
ALTER TABLE remediations ADD COLUMN claimed_by TEXT;
ALTER TABLE remediations ADD COLUMN claimed_at TEXT;
ALTER TABLE remediations ADD COLUMN finished_at TEXT;
CREATE INDEX remediations_unfinished ON remediations (status, seq) WHERE finished_at IS NULL;

CREATE TABLE remediation_steps (
    remediation_id  TEXT NOT NULL,
    idx             INTEGER NOT NULL,
    kind            TEXT NOT NULL,
    status          TEXT NOT NULL,   -- started | succeeded | failed
    started_at      TEXT NOT NULL,
    finished_at     TEXT,
    detail          TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (remediation_id, idx)
);
