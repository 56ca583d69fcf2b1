-- Issue 14: several instances may share a journal (and a replica may die holding a
-- claim), so every write about a claimed plan names its holder, and each instance
-- keeps its own heartbeat: a claim whose holder stopped beating is taken over.

-- One heartbeat row per instance (0007 kept a single row for the readiness probe).
-- Rows of 0007 name the writing process, not an executor: kept, they match no claim.
CREATE TABLE heartbeats (
    instance  TEXT PRIMARY KEY,
    beat_at   TEXT NOT NULL
);
INSERT INTO heartbeats (instance, beat_at) SELECT instance, beat_at FROM heartbeat;
DROP TABLE heartbeat;

-- Outbox leases: a relay leases the rows it is about to publish, so another
-- replica's relay does not publish them too; an expired lease is offered again.
ALTER TABLE outbox ADD COLUMN leased_by TEXT;
ALTER TABLE outbox ADD COLUMN lease_until TEXT;

-- A rehearsal (dry run) by an executor itself running dry used to keep the status
-- 'running' when it finished; the lifecycle now records it as the dry run it was.
UPDATE remediations SET status = 'dry-run' WHERE status = 'running' AND finished_at IS NOT NULL;

-- Finding the claims to recover: unfinished, claimed.
CREATE INDEX remediations_claims ON remediations (claimed_by, seq)
    WHERE finished_at IS NULL AND claimed_at IS NOT NULL;
