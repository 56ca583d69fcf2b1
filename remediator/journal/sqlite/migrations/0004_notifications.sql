-- The one Slack message of each remediation, so later stages update it in place.
CREATE TABLE slack_messages (
    remediation_id  TEXT PRIMARY KEY,
    channel         TEXT NOT NULL,
    ts              TEXT NOT NULL
);
