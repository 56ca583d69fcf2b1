"""Outcome events: what remediator did, as CloudEvents for other systems to follow."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from remediator.domain.lifecycle import Remediation, RemediationStatus
from remediator.domain.plans import ActionKind

EVENT_SOURCE = "/remediator"


class OutcomeStage(StrEnum):
    """The outcome event types (``io.remediator.remediation.<stage>``)."""

    PLANNED = "planned"
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


OUTCOME_TYPES = tuple(stage.value for stage in OutcomeStage)
# dry-run remediations are reported as planned with data.dry_run = true
_STAGE_FOR_STATUS = {
    RemediationStatus.PLANNED: OutcomeStage.PLANNED,
    RemediationStatus.AWAITING_APPROVAL: OutcomeStage.PLANNED,
    RemediationStatus.DRY_RUN: OutcomeStage.PLANNED,
    RemediationStatus.SKIPPED: OutcomeStage.SKIPPED,
    RemediationStatus.RUNNING: OutcomeStage.STARTED,
    RemediationStatus.SUCCEEDED: OutcomeStage.SUCCEEDED,
    RemediationStatus.FAILED: OutcomeStage.FAILED,
    RemediationStatus.NEEDS_HUMAN: OutcomeStage.FAILED,
    # Never ran: people said no, withdrew it, or nobody approved it in time.
    RemediationStatus.REJECTED: OutcomeStage.SKIPPED,
    RemediationStatus.CANCELLED: OutcomeStage.SKIPPED,
    RemediationStatus.EXPIRED: OutcomeStage.SKIPPED,
}


def outcome_stage(status: RemediationStatus) -> OutcomeStage | None:
    return _STAGE_FOR_STATUS.get(status)


def remediation_outcome_event(
    remediation: Remediation, *, status: RemediationStatus, at: datetime
) -> dict[str, Any]:
    """The outcome event of a journaled remediation reaching ``status``."""
    return outcome_event(
        remediation_id=remediation.id,
        status=status,
        service=remediation.service,
        namespace=remediation.namespace,
        rule=remediation.rule,
        action=remediation.action,
        reason=None,
        signal_id=remediation.signal_id,
        explanation=remediation.explanation,
        at=at,
    )


def outcome_event(
    *,
    remediation_id: str,
    status: RemediationStatus,
    service: str,
    namespace: str | None,
    rule: str | None,
    action: ActionKind | None,
    reason: str | None,
    signal_id: str,
    explanation: str,
    at: datetime,
) -> dict[str, Any]:
    """A structured-mode CloudEvent; its id is stable per remediation and stage."""
    stage = outcome_stage(status)
    if stage is None:
        raise ValueError(f"no outcome event for status {status.value!r}")
    return {
        "specversion": "1.0",
        "id": f"{remediation_id}:{stage.value}",
        "source": EVENT_SOURCE,
        "type": f"io.remediator.remediation.{stage.value}",
        "subject": service,
        "time": at.isoformat(),
        "datacontenttype": "application/json",
        "data": {
            "remediation_id": remediation_id,
            "status": status.value,
            "service": service,
            "namespace": namespace,
            "rule": rule,
            "action": None if action is None else action.value,
            "reason": reason,
            "dry_run": status is RemediationStatus.DRY_RUN,
            "signal_id": signal_id,
            "explanation": explanation,
        },
    }


def rolledback_cdevent(
    *, remediation_id: str, service: str, namespace: str | None, at: datetime
) -> dict[str, Any]:
    """CDEvents ``service.rolledback``: the standard way CD tools learn of a rollback."""
    return {
        "specversion": "1.0",
        "id": f"{remediation_id}:rolledback",
        "source": EVENT_SOURCE,
        "type": "dev.cdevents.service.rolledback.0.2.0",
        "time": at.isoformat(),
        "datacontenttype": "application/json",
        "data": {
            "context": {
                "version": "0.4.1",
                "id": f"{remediation_id}:rolledback",
                "source": EVENT_SOURCE,
                "type": "dev.cdevents.service.rolledback.0.2.0",
                "timestamp": at.isoformat(),
            },
            "subject": {
                "id": service,
                "source": EVENT_SOURCE,
                "type": "service",
                "content": {"environment": {"id": namespace or ""}},
            },
            "customData": {"remediation_id": remediation_id},
        },
    }
