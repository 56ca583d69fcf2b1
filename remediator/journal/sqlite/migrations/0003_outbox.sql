-- Messages to publish (outcome events, later notifications), written in the same
-- transaction as the state change they report: a crash between acting and
-- publishing cannot lose them, and each id is published until acknowledged.
CREATE TABLE outbox (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT NOT NULL UNIQUE,
    channel       TEXT NOT NULL,   -- e.g. kafka:remediator.outcomes
    key           TEXT,
    payload       TEXT NOT NULL,   -- JSON
    created_at    TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    published_at  TEXT
);
CREATE INDEX outbox_pending ON outbox (channel, seq) WHERE published_at IS NULL;
