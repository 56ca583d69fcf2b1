"""Prometheus metrics, on a registry owned by the runtime (no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
# Deciding waits behind intake in a storm and behind a restart: seconds to minutes count.
DECISION_LATENCY_BUCKETS = (
    0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 60, 300,
)  # fmt: skip


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.webhook_requests = Counter(
            "remediator_webhook_requests",
            "Webhook requests answered, by HTTP status code.",
            ["code"],
            registry=r,
        )
        self.alerts_received = Counter(
            "remediator_alerts_received",
            "Alerts received from Alertmanager, by alert status.",
            ["status"],
            registry=r,
        )
        self.alerts_duplicate = Counter(
            "remediator_alerts_duplicate",
            "Alerts whose idempotency key was already journaled (replays, HA peers).",
            registry=r,
        )
        self.alerts_unroutable = Counter(
            "remediator_alerts_unroutable",
            "Alerts journaled without a resolvable service label.",
            registry=r,
        )
        self.alerts_truncated = Counter(
            "remediator_alerts_truncated",
            "Alerts Alertmanager dropped from payloads (truncatedAlerts; raise max_alerts).",
            registry=r,
        )
        self.request_duration = Histogram(
            "remediator_webhook_request_duration_seconds",
            "Time to answer a webhook request, journal write included.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.decisions = Counter(
            "remediator_decisions",
            "Signals decided, by outcome (plan, no_action) and no-action reason.",
            ["outcome", "reason"],
            registry=r,
        )
        self.decision_latency = Histogram(
            "remediator_decision_latency_seconds",
            "Time from receiving a signal until this instance journaled its decision "
            "(across hosts, clock skew between replicas included).",
            buckets=DECISION_LATENCY_BUCKETS,
            registry=r,
        )
        self.remediations_finished = Counter(
            "remediator_remediations_finished",
            "Plans the executor finished, by action and final status.",
            ["action", "status"],
            registry=r,
        )
        self.journal_write_duration = Histogram(
            "remediator_journal_write_duration_seconds",
            "Time from handing signals to the journal until they are durable.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.internal_errors = Counter(
            "remediator_internal_errors",
            "Unexpected errors a component survived (logged at ERROR), by component.",
            ["component"],
            registry=r,
        )
        self.facts_errors = Counter(
            "remediator_facts_errors",
            "Failed reads of live facts (replicas); the engine decided with them unknown.",
            ["service"],
            registry=r,
        )
        self.root_task_restarts = Counter(
            "remediator_root_task_restarts",
            "Root tasks (decision engine, executor, relays, Kafka intake) restarted after a bug.",
            ["task"],
            registry=r,
        )
        self.lock_attempts = Counter(
            "remediator_lock_attempts",
            "Attempts to take a service's Lease, by result (acquired, held_elsewhere, error).",
            ["result"],
            registry=r,
        )
        self.lease_lost = Counter(
            "remediator_lease_lost",
            "Plans stopped before their next step because the service's Lease was lost.",
            registry=r,
        )
        self.http_rejected = Counter(
            "remediator_http_rejected",
            "HTTP requests answered with a 4xx (the client's mistake), by route and status code.",
            ["route", "code"],
            registry=r,
        )
        self.pruned_signals = Counter(
            "remediator_journal_pruned_signals",
            "Signals (and their idempotency keys) forgotten after journal.retention_hours.",
            registry=r,
        )
        self.journal_writer_up = Gauge(
            "remediator_journal_writer_up",
            "1 while the journal's writer can make progress, 0 once it stopped "
            "(/healthz fails then, so the pod is restarted).",
            registry=r,
        )
        self.auth_failures = Counter(
            "remediator_auth_failures",
            "Requests whose credential was missing (reason=missing) or not known (invalid).",
            ["reason"],
            registry=r,
        )
        self.auth_throttled = Counter(
            "remediator_auth_throttled",
            "Requests answered 429 because their address failed authentication too often.",
            registry=r,
        )
        self.rollback_requests = Counter(
            "remediator_rollback_requests",
            "Rollback requests journaled over the API, by the status they were decided to "
            "(awaiting_approval, skipped, ...; deciding: not decided within the answer's wait).",
            ["status"],
            registry=r,
        )
        self.approval_votes = Counter(
            "remediator_approval_votes",
            "Approvals and rejections cast over the API, by verdict and what they came to "
            "(recorded, approved, rejected, expired, refusals).",
            ["verdict", "result"],
            registry=r,
        )
        self.slack_interactions = Counter(
            "remediator_slack_interactions",
            "Requests to the Slack interactions endpoint, by what became of them: approve, "
            "reject (counted), refused (by the approval rules), unmapped, forbidden, "
            "other_team, ignored, unavailable, or refused before reading: missing, "
            "malformed, stale, mismatch, replayed.",
            ["result"],
            registry=r,
        )
        self.approvals_escalated = Counter(
            "remediator_approvals_escalated",
            "Plans awaiting approval escalated: nobody answered within the response time.",
            registry=r,
        )
        self.approvals_expired = Counter(
            "remediator_approvals_expired",
            "Plans awaiting approval that reached their hard expiry and ended expired.",
            registry=r,
        )
