-- Issue 15: approvals are enforced (the SQLite journal's migration 10). A plan awaiting
-- approval has a request: who asked (NULL: an alert's plan), why, and the policy it must
-- meet (the seats, each filled by a distinct principal, the response time, the expiry,
-- emergency), with the instants the approval clock compares; an emergency's review is
-- closed here too.
CREATE TABLE approval_requests (
    remediation_id    text        PRIMARY KEY,
    requester         text,
    scenario          text,
    reason            text,
    target            text,
    policy            jsonb       NOT NULL,
    requested_at      timestamptz NOT NULL,
    response_due_at   timestamptz NOT NULL,
    expires_at        timestamptz NOT NULL,
    escalated_at      timestamptz,
    review_closed_by  text,
    review_closed_at  timestamptz,
    review_comment    text
);

-- Every approval and rejection, one per principal and plan: a second vote by the same
-- principal is refused by the key, whichever replica it reaches.
CREATE TABLE approval_votes (
    remediation_id  text        NOT NULL,
    principal       text        NOT NULL,
    verdict         text        NOT NULL CHECK (verdict IN ('approve', 'reject')),
    roles           jsonb       NOT NULL,   -- the policy's roles the principal held
    at              timestamptz NOT NULL,
    comment         text,
    PRIMARY KEY (remediation_id, principal)
);

-- Plans that were waiting before requests were journaled: the plan's approvers, one seat
-- each (any approver when it names none), answered within the default hour and expiring
-- four hours after they were decided.
INSERT INTO approval_requests (remediation_id, policy, requested_at, response_due_at, expires_at)
SELECT id,
       jsonb_build_object(
           'seats',
           CASE WHEN jsonb_array_length(coalesce(decision -> 'approvers', '[]'::jsonb)) = 0
                THEN jsonb_build_array(jsonb_build_object('roles', '[]'::jsonb))
                ELSE (SELECT jsonb_agg(jsonb_build_object('roles', jsonb_build_array(value)))
                      FROM jsonb_array_elements(decision -> 'approvers'))
           END,
           'response_time', 3600, 'expires_after', 14400, 'emergency', false),
       created_at, created_at + interval '1 hour', created_at + interval '4 hours'
FROM remediations WHERE status = 'awaiting_approval';
