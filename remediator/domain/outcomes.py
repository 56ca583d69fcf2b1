"""Outcome events: what remediator did, as CloudEvents for other systems to follow."""

from __future__ import annotations

from datetime import datetime
from typing import Any

EVENT_SOURCE = "/remediator"
OUTCOME_TYPES = ("planned", "started", "succeeded", "failed", "skipped")
# dry-run remediations are reported as planned with data.dry_run = true
_STAGE_FOR_STATUS = {
    "planned": "planned",
    "awaiting_approval": "planned",
    "dry-run": "planned",
    "skipped": "skipped",
    "running": "started",
    "succeeded": "succeeded",
    "failed": "failed",
    "needs_human": "failed",
}


def outcome_stage(status: str) -> str | None:
    return _STAGE_FOR_STATUS.get(status)


def outcome_event(
    *,
    remediation_id: str,
    status: str,
    service: str,
    namespace: str | None,
    rule: str | None,
    action: str | None,
    reason: str | None,
    signal_id: str,
    explanation: str,
    at: datetime,
) -> dict[str, Any]:
    """A structured-mode CloudEvent; its id is stable per remediation and stage."""
    stage = outcome_stage(status)
    if stage is None:
        raise ValueError(f"no outcome event for status {status!r}")
    return {
        "specversion": "1.0",
        "id": f"{remediation_id}:{stage}",
        "source": EVENT_SOURCE,
        "type": f"io.remediator.remediation.{stage}",
        "subject": service,
        "time": at.isoformat(),
        "datacontenttype": "application/json",
        "data": {
            "remediation_id": remediation_id,
            "status": status,
            "service": service,
            "namespace": namespace,
            "rule": rule,
            "action": action,
            "reason": reason,
            "dry_run": status == "dry-run",
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
