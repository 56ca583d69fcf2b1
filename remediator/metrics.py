"""Prometheus metrics, on a registry owned by the runtime (no global state).

docs/metrics.md is generated from this registry (``python -m remediator.runtime.metrics_doc``);
a unit test fails when it is out of date.
"""

from __future__ import annotations

import platform

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder

import remediator

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
# Deciding waits behind intake in a storm and behind a restart: seconds to minutes count.
DECISION_LATENCY_BUCKETS = (
    0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 60, 300,
)  # fmt: skip
# The event loop's responsiveness: a millisecond is fine, 10 ms is the storm target,
# seconds mean every webhook and every root task waited that long.
LOOP_LAG_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
)  # fmt: skip
# Acting waits for a Lease (and for approvers, when a plan needs them); a plan's steps
# wait for rollouts: seconds to hours count.
ACTION_BUCKETS = (
    0.1, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 43200,
)  # fmt: skip
# Hop 3 as well: with nothing to wait for, a plan starts within milliseconds of its
# decision (bench/first_write.py: 3-12 ms), which ACTION_BUCKETS' 0.1 s cannot resolve.
ACTION_START_BUCKETS = (0.005, 0.01, 0.025, 0.05, *ACTION_BUCKETS)


def exposition(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """The registry's samples and their content type: OpenMetrics when the scraper's
    Accept header asks for it (Prometheus does), the text format 0.0.4 otherwise."""
    encode, content_type = choose_encoder(accept or "")
    return encode(registry), content_type


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # What every Prometheus client exports by default, on our own registry:
        # process_* (CPU, memory, file descriptors), python_info, python_gc_*.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.build_info = Info(
            "remediator_build",
            "The running remediator: its version and the Python it runs on (always 1).",
            registry=r,
        )
        self.build_info.info(
            {"version": remediator.__version__, "python": platform.python_version()}
        )
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
        # The hops a signal takes (docs/metrics.md): received -> journaled -> decided
        # -> first action -> finished. Each histogram times one hop.
        self.journal_latency = Histogram(
            "remediator_journal_latency_seconds",
            "Hop 1: time from receiving a signal (webhook or Kafka) until it was durable "
            "in the journal (new signals only).",
            buckets=DECISION_LATENCY_BUCKETS,
            registry=r,
        )
        self.decision_latency = Histogram(
            "remediator_decision_latency_seconds",
            "Hop 2: time from receiving a signal until this instance journaled its decision "
            "(across hosts, clock skew between replicas included).",
            buckets=DECISION_LATENCY_BUCKETS,
            registry=r,
        )
        self.event_loop_lag = Histogram(
            "remediator_event_loop_lag_seconds",
            "How late the event loop woke a task that slept a fixed interval (0.1 s): "
            "the time anything ready to run (a webhook, a decision, a plan's next step) "
            "waited for the loop.",
            buckets=LOOP_LAG_BUCKETS,
            registry=r,
        )
        self.action_latency = Histogram(
            "remediator_action_latency_seconds",
            "Hop 3: time from a plan's decision (or its approval, when it needed one) until "
            "this instance started its first step (dry runs not counted).",
            buckets=ACTION_START_BUCKETS,
            registry=r,
        )
        self.remediation_duration = Histogram(
            "remediator_remediation_duration_seconds",
            "Hop 5: time from a plan's first step until it finished, by final status "
            "(succeeded, failed, needs_human; dry runs not counted).",
            ["status"],
            buckets=ACTION_BUCKETS,
            registry=r,
        )
        self.verification_latency = Histogram(
            "remediator_verification_latency_seconds",
            "Hop 4: time from a plan's first step until its last verification step passed "
            "(rollout complete, health, smoke test, condition cleared); succeeded plans that "
            "verify only, dry runs not counted.",
            buckets=ACTION_BUCKETS,
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
        self.notifications = Counter(
            "remediator_notifications",
            "Notices delivered, by channel (slack, email) and result: sent, retried (the "
            "channel failed for now; sent again later), given_up (refused for good or a "
            "bug; kept in the outbox with the error), no_recipients (no email route).",
            ["channel", "result"],
            registry=r,
        )
        self.approvals_waiting = Gauge(
            "remediator_approvals_waiting",
            "Plans awaiting approval, read from the journal every "
            "approvals.check_interval_seconds (0 until the first read).",
            registry=r,
        )
        self.undecided_signals = Gauge(
            "remediator_undecided_signals",
            "Signals journaled and not yet decided (after the decision cursor), read from the "
            "journal every approvals.check_interval_seconds: deciding's backlog.",
            registry=r,
        )
        self.undecided_age = Gauge(
            "remediator_undecided_age_seconds",
            "How long the oldest undecided signal has waited since it was received (0 when "
            "none waits), read with remediator_undecided_signals. Growing: deciding is "
            "behind intake, or stopped.",
            registry=r,
        )
        self.circuit_open = Gauge(
            "remediator_circuit_open",
            "1 while the circuit breaker is open (automated actions stopped until someone "
            "resets it), 0 when closed; read from the journal every "
            "approvals.check_interval_seconds.",
            registry=r,
        )
