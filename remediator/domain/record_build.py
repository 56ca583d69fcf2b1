"""Build the rollback record from what the journal holds about a remediation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from remediator.domain.lifecycle import Remediation, RemediationStatus, StepRecord
from remediator.domain.record import RollbackRecord, TimelineEntry, Trigger
from remediator.domain.signals import Signal


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
) -> RollbackRecord:
    """``remediation`` as the journal gives it in full (with its decision and steps)."""
    plan = _plan_of(remediation.decision or {})
    entries = list(timeline)
    if signal is not None:
        entries.append(_received_entry(signal))
    claimed = remediation.claimed_at is not None
    entries.append(
        TimelineEntry(
            at=remediation.created_at,
            step="decided",
            # A claimed plan was planned when decided; whatever else it is, is shown later.
            status=(RemediationStatus.PLANNED if claimed else remediation.status).value,
            detail=(remediation.action.value if remediation.action else None)
            or remediation.reason
            or "",
        )
    )
    approved = _approval_entry(remediation)
    if approved is not None:
        entries.append(approved)
    entries += [_step_entry(step) for step in remediation.steps or ()]
    if remediation.finished_at is not None and claimed:
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
        revision_from=_first_param(plan, "from_revision"),
        revision_to=_first_param(plan, "to_revision", "revision"),
        version_from=_first_param(plan, "from_version"),
        version_to=_first_param(plan, "to_version"),
        approvers=tuple(plan.get("approvers") or ()) if plan else (),
        created_at=remediation.created_at,
        started_at=remediation.claimed_at,
        finished_at=remediation.finished_at,
        timeline=tuple(entries),
    )


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
        summary=signal.annotations.get("summary") or signal.annotations.get("description") or "",
        generator_url=str(signal.raw.get("generatorURL") or "") or None,
        runbook_url=signal.annotations.get("runbook_url"),
    )


def _approval_entry(remediation: Remediation) -> TimelineEntry | None:
    """Who approved (the principal), as which of the plan's approver roles, and why."""
    if remediation.approved_at is None:
        return None
    roles = remediation.approved_as or ()
    detail = f"by {remediation.approved_by or 'unknown'}"
    if roles:
        detail += f" as {', '.join(roles)}"
    if remediation.approval_comment:
        detail += f": {remediation.approval_comment}"
    return TimelineEntry(at=remediation.approved_at, step="approved", status="done", detail=detail)
