-- Every signal accepted from any source. `key` is the idempotency key: a replay of
-- the same alert state hits the UNIQUE constraint and stores nothing.
CREATE TABLE signals (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT    NOT NULL UNIQUE,
    key          TEXT    NOT NULL UNIQUE,
    source       TEXT    NOT NULL,
    kind         TEXT    NOT NULL,
    status       TEXT    NOT NULL,
    service      TEXT,
    namespace    TEXT,
    routable     INTEGER NOT NULL,
    labels       TEXT    NOT NULL,
    annotations  TEXT    NOT NULL,
    starts_at    TEXT,
    ends_at      TEXT,
    received_at  TEXT    NOT NULL,
    raw          TEXT    NOT NULL
);
CREATE INDEX signals_service_seq ON signals (service, seq);
CREATE INDEX signals_received_at ON signals (received_at);
