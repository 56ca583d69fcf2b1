-- Who did it (issue 12): an approval records the principal (approved_by, since 0006),
-- which of the plan's approver roles it approved as, and the approver's comment.
-- Circuit resets record their principal in engine_state's circuit document, and
-- webhooks the principal that sent each signal in the signal's body.
ALTER TABLE remediations ADD COLUMN approved_as TEXT;       -- JSON list of approver roles
ALTER TABLE remediations ADD COLUMN approval_comment TEXT;
