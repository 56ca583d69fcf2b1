-- The readiness probe's write: /readyz commits this one row each time, so a full
-- disk, a read-only filesystem or a held lock makes the daemon unready instead of
-- answering "writable" without having written anything.
CREATE TABLE heartbeat (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    beat_at   TEXT NOT NULL,
    instance  TEXT NOT NULL
);
