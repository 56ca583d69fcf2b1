-- Issue 15: each service's automation level (notify, approve, auto) as the daemon found
-- it in the catalog it loaded, one row per change (the first row of a service is the
-- level first seen). changed_by says what made the change as far as the daemon can
-- know: the rule files it loaded, with their digest.
CREATE TABLE automation_levels (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    service     TEXT NOT NULL,
    level       TEXT NOT NULL CHECK (level IN ('notify', 'approve', 'auto')),
    previous    TEXT CHECK (previous IN ('notify', 'approve', 'auto')),
    changed_at  TEXT NOT NULL,
    changed_by  TEXT NOT NULL
);
CREATE INDEX automation_levels_service ON automation_levels (service, seq);
-- GET /api/v1/services counts a month of remediations per service.
CREATE INDEX remediations_created ON remediations (created_at);
