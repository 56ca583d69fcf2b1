-- Every signal accepted from any source. `id` is derived from the idempotency key
-- (see remediator.domain.signals.signal_id): a replay of the same alert state maps
-- to the same id, and the UNIQUE index makes storing it twice impossible.
-- One index beyond the rowid keeps the insert path (the webhook's hot path) cheap.
CREATE TABLE signals (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT    NOT NULL UNIQUE,
    key          TEXT    NOT NULL,
    source       TEXT    NOT NULL,
    kind         TEXT    NOT NULL,
    status       TEXT    NOT NULL,
    service      TEXT,
    namespace    TEXT,
    starts_at    TEXT,
    ends_at      TEXT,
    received_at  TEXT    NOT NULL,
    -- {"labels": {...}, "annotations": {...}, "raw": {...}}: one JSON encode per signal
    body         TEXT    NOT NULL
);
CREATE INDEX signals_service_seq ON signals (service, seq);
