"""Build the rollback record from what the journal holds about a remediation."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from remediator.domain.lifecycle import RemediationStatus
from remediator.domain.record import RollbackRecord, TimelineEntry, Trigger
from remediator.domain.signals import Signal


def _parse(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


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
    remediation: Mapping[str, Any],
    signal: Signal | None,
    *,
    timeline: tuple[TimelineEntry, ...] = (),
) -> RollbackRecord:
    """``remediation`` is the journal's full remediation item (with ``decision``)."""
    decision: Mapping[str, Any] = remediation.get("decision", {})
    plan = _plan_of(decision)
    created = _parse(remediation["created_at"])
    assert created is not None
    entries = list(timeline)
    if signal is not None:
        entries.append(
            TimelineEntry(
                at=signal.received_at,
                step="signal received",
                status="done",
                detail=f"{signal.source.value} {signal.kind} ({signal.status.value})"
                + (f", sent by {signal.received_by}" if signal.received_by else ""),
            )
        )
    entries.append(
        TimelineEntry(
            at=created,
            step="decided",
            status="planned" if remediation.get("claimed_at") else remediation["status"],
            detail=remediation.get("action") or remediation.get("reason") or "",
        )
    )
    approved = _approval_entry(remediation)
    if approved is not None:
        entries.append(approved)
    for step in remediation.get("steps", ()):
        started = _parse(step["started_at"])
        assert started is not None
        detail = step.get("detail") or {}
        entries.append(
            TimelineEntry(
                at=_parse(step.get("finished_at")) or started,
                step=step["kind"],
                status=step["status"],
                detail=str(detail.get("error") or detail.get("summary") or ""),
            )
        )
    finished = _parse(remediation.get("finished_at"))
    if finished is not None and remediation.get("claimed_at"):
        entries.append(
            TimelineEntry(
                at=finished,
                step="finished",
                status=remediation["status"],
                detail=remediation.get("reason") or "",
            )
        )
    trigger = Trigger(
        kind=signal.kind if signal else "unknown",
        source=signal.source.value if signal else "",
        signal_id=remediation["signal_id"],
        severity=signal.labels.get("severity") if signal else None,
        summary=(signal.annotations.get("summary") or signal.annotations.get("description") or "")
        if signal
        else "",
        generator_url=str(signal.raw.get("generatorURL") or "") or None if signal else None,
        runbook_url=signal.annotations.get("runbook_url") if signal else None,
    )
    return RollbackRecord(
        remediation_id=remediation["id"],
        service=remediation["service"],
        namespace=remediation.get("namespace"),
        status=RemediationStatus(remediation["status"]),
        automatic=not remediation.get("manual", False),
        trigger=trigger,
        reason=remediation.get("reason") or "",
        explanation=remediation.get("explanation", ""),
        rule=remediation.get("rule"),
        action=remediation.get("action"),
        revision_from=_first_param(plan, "from_revision"),
        revision_to=_first_param(plan, "to_revision", "revision"),
        version_from=_first_param(plan, "from_version"),
        version_to=_first_param(plan, "to_version"),
        approvers=tuple(plan.get("approvers") or ()) if plan else (),
        created_at=created,
        started_at=_parse(remediation.get("claimed_at")),
        finished_at=finished,
        timeline=tuple(entries),
    )


def _approval_entry(remediation: Mapping[str, Any]) -> TimelineEntry | None:
    """Who approved (the principal), as which of the plan's approver roles, and why."""
    at = _parse(remediation.get("approved_at"))
    if at is None:
        return None
    roles = remediation.get("approved_as") or ()
    detail = f"by {remediation.get('approved_by') or 'unknown'}"
    if roles:
        detail += f" as {', '.join(roles)}"
    if remediation.get("approval_comment"):
        detail += f": {remediation['approval_comment']}"
    return TimelineEntry(at=at, step="approved", status="done", detail=detail)
