-- What the rule engine decided about each signal, and the remediations it opened.
-- The engine decides signals in seq order; engine_state.decided_seq is how far it got,
-- so a restart resumes exactly there (no signal decided twice, none skipped).
CREATE TABLE engine_state (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
INSERT INTO engine_state (name, value) VALUES ('decided_seq', '0');
INSERT INTO engine_state (name, value) VALUES ('circuit', '{"open": false, "reason": null, "changed_at": null}');

CREATE TABLE decisions (
    signal_seq      INTEGER PRIMARY KEY,
    signal_id       TEXT NOT NULL,
    service         TEXT,
    outcome         TEXT NOT NULL,   -- plan | no_action
    reason          TEXT,            -- NoActionReason when outcome = no_action
    rule            TEXT,
    remediation_id  TEXT,
    decided_at      TEXT NOT NULL,
    explanation     TEXT NOT NULL
);

CREATE TABLE remediations (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    signal_id       TEXT NOT NULL,
    service         TEXT NOT NULL,
    namespace       TEXT,
    rule            TEXT,
    action          TEXT,
    status          TEXT NOT NULL,   -- planned | dry-run | skipped | running | succeeded | failed | needs_human
    reason          TEXT,            -- why skipped
    manual          INTEGER NOT NULL DEFAULT 0,
    automated       INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    decision        TEXT NOT NULL,   -- the decision as JSON (Plan or NoAction .to_dict())
    explanation     TEXT NOT NULL
);
CREATE INDEX remediations_service_seq ON remediations (service, seq);
CREATE INDEX remediations_status_seq ON remediations (status, seq);
