-- Issue 18: what the decision engine reads for every batch, indexed so that it does not
-- grow with the skipped decisions of a storm. Both are partial: a storm adds skipped
-- rows by the thousand and these indexes none. The queries repeat each predicate
-- literally (journal/sqlite/decisions.py): SQLite uses a partial index only when the
-- query's WHERE names the same terms.
-- A service's remediations that were not skipped (its history for cooldowns, limits,
-- open plans).
CREATE INDEX remediations_service_not_skipped ON remediations (service, created_at)
WHERE status != 'skipped';
-- Automated actions that acted (the circuit breaker's budget).
CREATE INDEX remediations_automated_acted ON remediations (created_at)
WHERE automated = 1 AND status NOT IN ('skipped', 'dry-run', 'awaiting_approval', 'rejected', 'cancelled', 'expired');
