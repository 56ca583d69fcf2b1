"""Rollback records in each status the renderers must handle (shared with integration)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from remediator.domain.lifecycle import RemediationStatus
from remediator.domain.record import (
    ApprovalEntry,
    ApprovalFacts,
    CheckResult,
    CheckResults,
    CheckStatus,
    Impact,
    RollbackRecord,
    TimelineEntry,
    Trigger,
)

T0 = datetime(2026, 1, 15, 14, 30, 0, tzinfo=UTC)
GENERATOR_URL = "http://prometheus.example:9090/graph?g0.expr=rate%28x%5B5m%5D%29&g0.tab=1"
RUNBOOK_URL = "https://runbooks.example/checkout/high-error-rate"
RECORD_URL = "http://remediator.example:9095/api/v1/remediations/rem_1/record?format=html"

PASSED = CheckResult(status=CheckStatus.PASSED)


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def trigger(**overrides: object) -> Trigger:
    values: dict[str, object] = {
        "kind": "HighErrorRate",
        "source": "alertmanager",
        "signal_id": "sig_0123456789abcdef01234567",
        "severity": "critical",
        "summary": "5xx ratio above 5% for 5 minutes",
        "generator_url": GENERATOR_URL,
        "runbook_url": RUNBOOK_URL,
    }
    values.update(overrides)
    return Trigger.model_validate(values)


def succeeded(**overrides: object) -> RollbackRecord:
    values: dict[str, object] = {
        "remediation_id": "rem_1",
        "service": "checkout",
        "namespace": "shop",
        "status": RemediationStatus.SUCCEEDED,
        "automatic": True,
        "trigger": trigger(),
        "reason": "error rate above 5% right after deploy v1.1.0",
        "explanation": "rule rollback-on-errors matched HighErrorRate within 30m of a deploy",
        "rule": "rollback-on-errors",
        "action": "rollback",
        "version_from": "v1.1.0",
        "version_to": "v1.0.0",
        "revision_from": "42",
        "revision_to": "41",
        "owner": "oncall-shop",
        "approvers": (),
        "created_at": at(0),
        "started_at": at(30),
        "finished_at": at(300),
        # Deliberately out of order: the record sorts its timeline.
        "timeline": (
            TimelineEntry(at=at(240), step="verify_health", status="passed", detail="3/3 ready"),
            TimelineEntry(at=at(0), step="detect", status="done", detail="HighErrorRate firing"),
            TimelineEntry(at=at(30), step="decide", status="done", detail="rollback to rev 41"),
            TimelineEntry(at=at(60), step="rollout_undo", status="done", detail="to revision 41"),
            TimelineEntry(at=at(300), step="finish", status="succeeded"),
        ),
        "results": CheckResults(
            application=PASSED,
            database=CheckResult(status=CheckStatus.SKIPPED, detail="no migration involved"),
            health=CheckResult(status=CheckStatus.PASSED, detail="3/3 pods ready"),
            function=PASSED,
            performance=CheckResult(status=CheckStatus.PASSED, detail="p99 180 ms"),
        ),
        "impact": Impact(scope="checkout in shop"),
    }
    values.update(overrides)
    return RollbackRecord.model_validate(values)


def failed() -> RollbackRecord:
    return succeeded(
        remediation_id="rem_2",
        status=RemediationStatus.FAILED,
        timeline=(
            TimelineEntry(at=at(0), step="detect", status="done"),
            TimelineEntry(at=at(60), step="rollout_undo", status="done"),
            TimelineEntry(
                at=at(600), step="verify_health", status="failed", detail="0/3 ready after 540s"
            ),
        ),
        results=CheckResults(
            application=CheckResult(status=CheckStatus.FAILED, detail="CrashLoopBackOff"),
            health=CheckResult(status=CheckStatus.FAILED, detail="0/3 pods ready"),
        ),
        finished_at=at(600),
    )


def needs_human() -> RollbackRecord:
    return succeeded(
        remediation_id="rem_3",
        status=RemediationStatus.NEEDS_HUMAN,
        automatic=False,
        action="revert_migration",
        reason="migration 0042 is not reversible",
        approvers=("alice", "bob"),
        timeline=(
            TimelineEntry(at=at(0), step="detect", status="done"),
            TimelineEntry(at=at(20), step="approval", status="waiting", detail="alice, bob"),
        ),
        results=CheckResults(),
        finished_at=None,
    )


def dry_run() -> RollbackRecord:
    return succeeded(
        remediation_id="rem_4",
        status=RemediationStatus.DRY_RUN,
        started_at=None,
        finished_at=None,
        timeline=(
            TimelineEntry(at=at(0), step="rollout_undo", status="would run", detail="to rev 41"),
            TimelineEntry(at=at(0), step="verify_health", status="would run"),
        ),
        results=CheckResults(),
    )


def awaiting_approval() -> RollbackRecord:
    """A person's request: one of two approvers has answered."""
    return succeeded(
        remediation_id="rem_5",
        status=RemediationStatus.AWAITING_APPROVAL,
        automatic=False,
        results=CheckResults(),
        finished_at=None,
        approval=ApprovalFacts(
            requester="rita",
            required=("product-manager", "tech-lead"),
            answers=(ApprovalEntry(principal="pam", verdict="approve", roles=("product-manager",),
                                   at=at(60), comment="checkout <b>is</b> down"),),
            missing=("tech-lead",),
            response_time=timedelta(minutes=30),
            response_due_at=at(1800),
            expires_at=at(7200),
        ),
    )  # fmt: skip


ALL = {
    "succeeded": succeeded,
    "failed": failed,
    "needs_human": needs_human,
    "dry-run": dry_run,
    "awaiting-approval": awaiting_approval,
}

HOSTILE_SUMMARY = '<script>alert("x")</script> & <img src=x onerror=alert(1)>'


def hostile() -> RollbackRecord:
    return succeeded(
        trigger=trigger(
            summary=HOSTILE_SUMMARY,
            runbook_url="javascript:alert(1)",
            kind="Evil<script>",
        ),
        reason="<b>bold</b> & friends",
        timeline=(
            TimelineEntry(at=at(0), step="detect", status="done", detail="<script>x</script>"),
        ),
        root_cause="</td><script>steal()</script>",
        improvements=("<iframe src=//evil>",),
    )
