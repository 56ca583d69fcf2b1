"""Outcome events: what remediator did, as CloudEvents for other systems to follow."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from remediator.domain.artifacts import service_purl
from remediator.domain.lifecycle import Remediation, RemediationStatus
from remediator.domain.plans import ActionKind, Plan
from remediator.domain.steps import HelmRollbackParams, RolloutUndoParams, SwitchSelectorParams

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


CDEVENTS_SPEC_VERSION = "0.4.1"


class CDEventType(StrEnum):
    """The CDEvents (spec v0.4.1) remediator publishes, with their event versions."""

    SERVICE_ROLLEDBACK = "dev.cdevents.service.rolledback.0.2.0"
    INCIDENT_DETECTED = "dev.cdevents.incident.detected.0.2.0"
    INCIDENT_RESOLVED = "dev.cdevents.incident.resolved.0.2.0"


def rolledback_cdevent(
    *, remediation_id: str, service: str, namespace: str, to_revision: str | None, at: datetime
) -> dict[str, Any]:
    """CDEvents ``service.rolledback``: the standard way CD tools learn of a rollback.

    ``artifactId`` is required by the schema; remediator knows a service by name and deploy
    revision, never by image, so it is ``pkg:generic/<service>@<revision rolled back to>``
    (no version when the rollback names no revision: a canary's stable side).
    """
    return _cdevent(
        CDEventType.SERVICE_ROLLEDBACK,
        event_id=f"{remediation_id}:rolledback",
        remediation_id=remediation_id,
        subject={
            "id": service,
            "source": EVENT_SOURCE,
            "type": "service",
            "content": {
                "environment": {"id": namespace},
                "artifactId": service_purl(service, version=to_revision),
            },
        },
        custom={"remediation_id": remediation_id},
        at=at,
    )


def rollback_target(plan: Plan) -> str | None:
    """The revision a rollback plan returns the service to (None: the plan names none)."""
    for step in plan.steps:
        params = step.params
        if isinstance(params, RolloutUndoParams | HelmRollbackParams):
            return str(params.to_revision)
        if isinstance(params, SwitchSelectorParams):
            return params.to_value or None
    return None


def incident_cdevent(
    remediation: Remediation, *, resolved: bool, namespace: str, at: datetime
) -> dict[str, Any]:
    """CDEvents ``incident.detected`` (a remediation starts: something is wrong with the
    service) or ``incident.resolved`` (it ended well). The incident is the remediation's:
    both events name it ``incident/<remediation id>``, so consumers pair them."""
    stage = "resolved" if resolved else "detected"
    cd_type = CDEventType.INCIDENT_RESOLVED if resolved else CDEventType.INCIDENT_DETECTED
    action = remediation.action.value if remediation.action is not None else "none"
    description = (
        f"{remediation.service}: remediated by {action} (rule {remediation.rule})"
        if resolved
        else f"{remediation.service}: rule {remediation.rule} started {action}"
    )
    return _cdevent(
        cd_type,
        event_id=f"{remediation.id}:incident.{stage}",
        remediation_id=remediation.id,
        subject={
            "id": f"incident/{remediation.id}",
            "source": EVENT_SOURCE,
            "type": "incident",
            "content": {
                "description": description,
                "environment": {"id": namespace},
                "service": {"id": remediation.service},
            },
        },
        custom={
            "remediation_id": remediation.id,
            "signal_id": remediation.signal_id,
            "rule": remediation.rule,
            "action": action,
        },
        at=at,
    )


def _cdevent(
    cd_type: CDEventType,
    *,
    event_id: str,
    remediation_id: str,
    subject: dict[str, Any],
    custom: dict[str, Any],
    at: datetime,
) -> dict[str, Any]:
    """A CDEvent in a CloudEvent as the CDEvents binding says: the CloudEvents id,
    source, type, time and subject repeat the CDEvent's context and subject id.
    ``chainId`` is the remediation, linking its incident and rollback events."""
    timestamp = at.isoformat()
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": EVENT_SOURCE,
        "type": cd_type.value,
        "subject": subject["id"],
        "time": timestamp,
        "datacontenttype": "application/json",
        "data": {
            "context": {
                "version": CDEVENTS_SPEC_VERSION,
                "id": event_id,
                "chainId": remediation_id,
                "source": EVENT_SOURCE,
                "type": cd_type.value,
                "timestamp": timestamp,
            },
            "subject": subject,
            "customData": custom,
            "customDataContentType": "application/json",
        },
    }
