-- Issue 15: approvals are enforced. A plan awaiting approval has a request: who asked
-- (NULL: an alert's plan), why, and the policy it must meet (JSON ApprovalPolicy: the
-- seats, each filled by a distinct principal, the response time, the expiry, emergency),
-- with the instants the approval clock compares. A rollback request's emergency review
-- is closed here too.
CREATE TABLE approval_requests (
    remediation_id    TEXT PRIMARY KEY,
    requester         TEXT,
    scenario          TEXT,
    reason            TEXT,
    target            TEXT,
    policy            TEXT NOT NULL,
    requested_at      TEXT NOT NULL,
    response_due_at   TEXT NOT NULL,
    expires_at        TEXT NOT NULL,
    escalated_at      TEXT,
    review_closed_by  TEXT,
    review_closed_at  TEXT,
    review_comment    TEXT
);

-- Every approval and rejection, one per principal and plan: a second vote by the same
-- principal is refused by the key, whichever replica it reaches.
CREATE TABLE approval_votes (
    remediation_id  TEXT NOT NULL,
    principal       TEXT NOT NULL,
    verdict         TEXT NOT NULL CHECK (verdict IN ('approve', 'reject')),
    roles           TEXT NOT NULL,   -- JSON list: the policy's roles the principal held
    at              TEXT NOT NULL,
    comment         TEXT,
    PRIMARY KEY (remediation_id, principal)
);

-- Plans that were waiting before requests were journaled: the plan's approvers, one
-- seat each (any approver when it names none), answered within the default hour and
-- expiring four hours after they were decided.
INSERT INTO approval_requests (remediation_id, policy, requested_at, response_due_at, expires_at)
SELECT id,
       json_object(
           'seats',
           CASE WHEN json_array_length(coalesce(json_extract(decision, '$.approvers'), '[]')) = 0
                THEN json_array(json_object('roles', json_array()))
                ELSE (SELECT json_group_array(json_object('roles', json_array(value)))
                      FROM json_each(decision, '$.approvers'))
           END,
           'response_time', 3600, 'expires_after', 14400, 'emergency', json('false')),
       created_at,
       strftime('%Y-%m-%dT%H:%M:%S', substr(created_at, 1, 19), '+1 hours')
           || substr(created_at, 20),
       strftime('%Y-%m-%dT%H:%M:%S', substr(created_at, 1, 19), '+4 hours')
           || substr(created_at, 20)
FROM remediations WHERE status = 'awaiting_approval';
