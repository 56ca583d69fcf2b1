-- Issue 18: what the decision engine reads for every batch, indexed so that it does not
-- grow with the skipped decisions of a storm (partial indexes: a storm adds skipped rows
-- by the thousand and these indexes none). The queries state the same predicates as
-- literals (journal/postgres/decisions.py) so the planner can prove they apply.
CREATE INDEX remediations_service_not_skipped ON remediations (service, created_at)
WHERE status <> 'skipped';
CREATE INDEX remediations_automated_acted ON remediations (created_at)
WHERE automated AND status NOT IN ('skipped', 'dry-run', 'awaiting_approval', 'rejected', 'cancelled', 'expired');
