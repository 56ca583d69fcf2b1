-- Issue 16: the analysis people write into a rollback record (root cause, improvements,
-- lessons), one row per edit so every version, its editor and its time are kept; the
-- newest row is what the record shows. Lists are JSON arrays of text.
CREATE TABLE record_analysis (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    remediation_id  TEXT NOT NULL REFERENCES remediations (id),
    root_cause      TEXT NOT NULL,
    improvements    TEXT NOT NULL,
    lessons         TEXT NOT NULL,
    edited_by       TEXT NOT NULL,
    edited_at       TEXT NOT NULL
);
CREATE INDEX record_analysis_remediation ON record_analysis (remediation_id, seq);
