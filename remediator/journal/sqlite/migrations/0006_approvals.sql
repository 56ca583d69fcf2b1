-- Plans whose rule requires approval wait as 'awaiting_approval' until someone approves.
ALTER TABLE remediations ADD COLUMN approved_by TEXT;
ALTER TABLE remediations ADD COLUMN approved_at TEXT;
