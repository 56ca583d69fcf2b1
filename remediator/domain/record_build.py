"""Build the rollback record from what the journal holds about a remediation."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from remediator.domain.approvals import ApprovalState, Pending, Verdict
from remediator.domain.lifecycle import Remediation, RemediationStatus, StepRecord, StepStatus
from remediator.domain.record import (
    FAILED_STEP_EVIDENCE,
    Analysis,
    ApprovalEntry,
    ApprovalFacts,
    CheckResult,
    CheckResults,
    CheckStatus,
    Evidence,
    EvidenceEvent,
    Impact,
    RollbackRecord,
    TimelineEntry,
    Trigger,
)
from remediator.domain.requests import REASON_ANNOTATION
from remediator.domain.signals import Signal, Source
from remediator.domain.steps import StepKind


def _plan_of(decision: Mapping[str, Any]) -> Mapping[str, Any] | None:
    if "steps" in decision:
        return decision
    plan = decision.get("plan")
    return plan if isinstance(plan, Mapping) else None


def _first_param(plan: Mapping[str, Any] | None, *names: str) -> str | None:
    for step in (plan or {}).get("steps", ()):
        for name in names:
            value = step.get("params", {}).get(name)
            if value is not None:
                return str(value)
    return None


def record_from_journal(
    remediation: Remediation,
    signal: Signal | None,
    *,
    timeline: tuple[TimelineEntry, ...] = (),
    owner: str | None = None,
    analysis: Analysis | None = None,
) -> RollbackRecord:
    """``remediation`` as the journal gives it in full (with its decision and steps);
    ``owner`` from the catalog, ``analysis`` as people last wrote it."""
    plan = _plan_of(remediation.decision or {})
    versions = (plan or {}).get("versions") or {}
    steps = tuple(remediation.steps or ())
    evidence_detail, evidence_when = _evidence_detail(steps)
    notes = analysis or Analysis()
    entries = list(timeline)
    if signal is not None:
        entries.append(_received_entry(signal))
    claimed = remediation.claimed_at is not None
    approval = remediation.approval
    entries.append(
        TimelineEntry(
            at=remediation.created_at,
            step="decided",
            status=_decided_status(remediation).value,
            detail=(remediation.action.value if remediation.action else None)
            or remediation.reason
            or "",
        )
    )
    entries += _approval_entries(remediation)
    entries += [_step_entry(step) for step in remediation.steps or ()]
    # Ended without running (rejected, cancelled, expired): when, and why.
    never_ran = approval is not None and not claimed and remediation.status.final
    if remediation.finished_at is not None and (claimed or never_ran):
        entries.append(
            TimelineEntry(
                at=remediation.finished_at,
                step="finished",
                status=remediation.status.value,
                detail=remediation.reason or "",
            )
        )
    return RollbackRecord(
        remediation_id=remediation.id,
        service=remediation.service,
        namespace=remediation.namespace,
        status=remediation.status,
        automatic=not remediation.manual,
        trigger=_trigger(remediation, signal),
        reason=remediation.reason or "",
        explanation=remediation.explanation,
        rule=remediation.rule,
        action=remediation.action.value if remediation.action else None,
        revision_from=versions.get("revision_from") or _first_param(plan, "from_revision"),
        revision_to=versions.get("revision_to") or _first_param(plan, "to_revision", "revision"),
        version_from=versions.get("version_from") or _first_param(plan, "from_version"),
        version_to=versions.get("version_to") or _first_param(plan, "to_version"),
        image_from=versions.get("image_from"),
        image_to=versions.get("image_to"),
        owner=owner,
        approvers=tuple(plan.get("approvers") or ()) if plan else (),
        approved_by=_approved_by(remediation),
        approval=None if approval is None else _approval_facts(approval, remediation.status),
        created_at=remediation.created_at,
        started_at=remediation.claimed_at,
        finished_at=remediation.finished_at,
        timeline=tuple(entries),
        results=results_from_steps(plan, steps, claimed=claimed),
        impact=_impact(evidence_detail),
        evidence=_evidence(evidence_detail, claimed=claimed, when=evidence_when),
        root_cause=notes.root_cause,
        improvements=notes.improvements,
        lessons=notes.lessons,
        analysis_edited_by=notes.edited_by,
        analysis_edited_at=notes.edited_at,
    )


def _approved_by(remediation: Remediation) -> tuple[str, ...]:
    """Who approved, each with the role they answered as."""
    state = remediation.approval
    approved = [
        f"{v.principal} ({', '.join(v.roles)})" if v.roles else v.principal
        for v in (state.votes if state is not None else ())
        if v.verdict is Verdict.APPROVE
    ]
    if not approved and remediation.approved_by:
        approved.append(remediation.approved_by)
    return tuple(approved)


def _last_detail(steps: tuple[StepRecord, ...], kind: StepKind) -> Mapping[str, Any] | None:
    found = [s for s in steps if s.kind == kind.value and s.status is StepStatus.SUCCEEDED]
    return found[-1].detail if found else None


def _evidence_detail(
    steps: tuple[StepRecord, ...],
) -> tuple[Mapping[str, Any] | None, str]:
    """The plan's recorded evidence, else what was gathered when a step failed (a plan
    that stops never reaches its record_evidence step), with when it was gathered."""
    recorded = _last_detail(steps, StepKind.RECORD_EVIDENCE)
    if recorded is not None:
        return recorded, ""
    for step in reversed(steps):
        gathered = step.detail.get(FAILED_STEP_EVIDENCE)
        if step.status is StepStatus.FAILED and isinstance(gathered, Mapping):
            return gathered, f"recorded when step {step.idx + 1} ({step.kind}) failed"
    return None, ""


# Which record result each verification (and action) step fills in.
_RESULT_OF_STEP: dict[str, str] = {
    StepKind.WAIT_ROLLOUT.value: "application",
    StepKind.ROLLOUT_UNDO.value: "application",
    StepKind.HELM_ROLLBACK.value: "application",
    StepKind.SWITCH_SELECTOR.value: "application",
    StepKind.SET_ROUTE_WEIGHTS.value: "application",
    StepKind.SCALE_DEPLOYMENT.value: "application",
    StepKind.RESTORE_CONFIG.value: "application",
    StepKind.RESTART_WORKLOAD.value: "application",
    StepKind.BACKUP_DATABASE.value: "database",
    StepKind.REVERT_MIGRATION.value: "database",
    StepKind.VERIFY_HEALTH.value: "health",
    StepKind.VERIFY_SMOKE.value: "function",
    StepKind.VERIFY_CONDITION.value: "performance",
}
_NOT_PLANNED = {
    "application": "the plan changes no workload",
    "database": "the plan touches no database",
    "health": "the catalog names no health_url",
    "function": "the catalog names no smoke_test",
    "performance": "the plan has no condition check",
}


def results_from_steps(
    plan: Mapping[str, Any] | None, steps: tuple[StepRecord, ...], *, claimed: bool
) -> CheckResults:
    """The five results, each from the last journaled step that fills it: passed,
    failed, skipped (with why), or not run (not planned, or never reached)."""
    planned = {
        _RESULT_OF_STEP[str(step.get("kind"))]
        for step in (plan or {}).get("steps", ())
        if str(step.get("kind")) in _RESULT_OF_STEP
    }
    results: dict[str, CheckResult] = {}
    for step in steps:
        field = _RESULT_OF_STEP.get(step.kind)
        if field is None or step.status is StepStatus.STARTED:
            continue
        results[field] = _check_of(step)
    for field, why_not in _NOT_PLANNED.items():
        if field not in results:
            reached = "not reached: the plan ended before it" if claimed else "the plan never ran"
            detail = reached if field in planned else why_not
            results[field] = CheckResult(status=CheckStatus.NOT_RUN, detail=detail)
    return CheckResults(**results)


def _check_of(step: StepRecord) -> CheckResult:
    detail = step.detail
    text = str(detail.get("error") or detail.get("summary") or "")
    if step.status is StepStatus.FAILED:
        return CheckResult(status=CheckStatus.FAILED, detail=text)
    if detail.get("result") == "skipped" or detail.get("dry_run") is True:
        return CheckResult(status=CheckStatus.SKIPPED, detail=text)
    return CheckResult(status=CheckStatus.PASSED, detail=text or step.kind)


def _impact(detail: Mapping[str, Any] | None) -> Impact:
    if detail is None:
        return Impact(failed_requests="unknown: no evidence was recorded")
    pods = detail.get("pods_affected")
    return Impact(
        pods_affected=tuple(str(p) for p in pods) if isinstance(pods, list) else (),
        failed_requests=str(detail.get("failed_requests") or "unknown"),
    )


def _evidence(detail: Mapping[str, Any] | None, *, claimed: bool, when: str = "") -> Evidence:
    if detail is None:
        why = "the plan ended before it" if claimed else "the plan never ran"
        return Evidence(note=f"no evidence recorded: {why}")
    notes = [when] if when else []
    if "events" not in detail and detail.get("error"):
        return Evidence(note="; ".join([*notes, str(detail["error"])]))
    events = detail.get("events")
    parsed: list[EvidenceEvent] = []
    if isinstance(events, list):
        parsed = [EvidenceEvent.model_validate(e) for e in events if isinstance(e, dict)]
    else:
        notes.append(f"Kubernetes events {events}")
    if isinstance(detail.get("events_note"), str):
        notes.append(detail["events_note"])
    history = detail.get("helm_history")
    lines: list[str] = []
    if isinstance(history, list):
        lines = [_helm_line(h) for h in history if isinstance(h, dict)]
    elif history is not None:
        notes.append(f"helm history {history}")
    return Evidence(events=tuple(parsed), helm_history=tuple(lines), note="; ".join(notes))


def _helm_line(revision: Mapping[str, Any]) -> str:
    return (
        f"revision {revision.get('revision')} {revision.get('status')} "
        f"{revision.get('chart', '')} {revision.get('description', '')}"
    ).strip()


def _received_entry(signal: Signal) -> TimelineEntry:
    return TimelineEntry(
        at=signal.received_at,
        step="signal received",
        status="done",
        detail=f"{signal.source.value} {signal.kind} ({signal.status.value})"
        + (f", sent by {signal.received_by}" if signal.received_by else ""),
    )


def _step_entry(step: StepRecord) -> TimelineEntry:
    detail = step.detail
    return TimelineEntry(
        at=step.finished_at or step.started_at,
        step=step.kind,
        status=step.status.value,
        detail=str(detail.get("error") or detail.get("summary") or ""),
    )


def _trigger(remediation: Remediation, signal: Signal | None) -> Trigger:
    if signal is None:
        return Trigger(kind="unknown", source="", signal_id=remediation.signal_id)
    return Trigger(
        kind=signal.kind,
        source=signal.source.value,
        signal_id=remediation.signal_id,
        severity=signal.labels.get("severity"),
        summary=_summary(signal),
        generator_url=str(signal.raw.get("generatorURL") or "") or None,
        runbook_url=signal.annotations.get("runbook_url"),
    )


def _decided_status(remediation: Remediation) -> RemediationStatus:
    """What the plan was when decided: a claimed one was planned, one that needed approval
    waited; whatever else it became is shown later in the timeline."""
    if remediation.approval is not None:
        return RemediationStatus.AWAITING_APPROVAL
    if remediation.claimed_at is not None:
        return RemediationStatus.PLANNED
    return remediation.status


def _approval_entries(remediation: Remediation) -> list[TimelineEntry]:
    """Each approval and rejection (principal, role, comment), and the escalation."""
    state = remediation.approval
    entries = [] if state is None else [_vote_entry(v.principal, v.verdict, v.roles, v.at,
                                                    v.comment) for v in state.votes]  # fmt: skip
    if state is not None and state.request.escalated_at is not None:
        entries.append(
            TimelineEntry(
                at=state.request.escalated_at,
                step="escalated",
                status="done",
                detail="no answer within the response time",
            )
        )
    voters = set() if state is None else {v.principal for v in state.votes}
    # Approved without a vote: break-glass on the journal file, or a journal of before.
    if remediation.approved_at is not None and remediation.approved_by not in voters:
        entries.append(
            _vote_entry(remediation.approved_by or "unknown", Verdict.APPROVE,
                        remediation.approved_as or (), remediation.approved_at,
                        remediation.approval_comment)
        )  # fmt: skip
    return entries


def _vote_entry(
    principal: str,
    verdict: Verdict,
    roles: tuple[str, ...],
    at: datetime,
    comment: str | None,
) -> TimelineEntry:
    detail = f"by {principal}"
    if roles:
        detail += f" as {', '.join(roles)}"
    if comment:
        detail += f": {comment}"
    step = "approved" if verdict is Verdict.APPROVE else "rejected"
    return TimelineEntry(at=at, step=step, status="done", detail=detail)


def _summary(signal: Signal) -> str:
    """An alert's summary, or what a person's request says as its reason."""
    annotations = signal.annotations
    if signal.source is Source.MANUAL and annotations.get(REASON_ANNOTATION):
        return annotations[REASON_ANNOTATION]
    return annotations.get("summary") or annotations.get("description") or ""


def _approval_facts(state: ApprovalState, status: RemediationStatus) -> ApprovalFacts:
    request, outcome = state.request, state.outcome
    response = state.response().value
    if status is RemediationStatus.EXPIRED:
        response = "missed"  # expired unanswered, escalated or not (the clock may have been down)
    review = request.review
    return ApprovalFacts(
        requester=request.requester,
        required=tuple(seat.label for seat in request.policy.seats),
        answers=tuple(
            ApprovalEntry(
                principal=v.principal,
                verdict=v.verdict.value,
                roles=v.roles,
                at=v.at,
                comment=v.comment,
            )
            for v in state.votes
        ),
        missing=tuple(s.label for s in outcome.missing) if isinstance(outcome, Pending) else (),
        response_time=request.policy.response_time,
        response_due_at=request.response_due_at,
        response=response,
        escalated_at=request.escalated_at,
        expires_at=request.expires_at,
        emergency=request.policy.emergency,
        review=state.review_status().value,
        review_closed_by=None if review is None else review.closed_by,
        review_closed_at=None if review is None else review.closed_at,
    )
