"""The outbox messages a change of a remediation writes with it: a notice per channel
(Slack, email) and its outcome event. Shared by the engine and the API, which both
change remediations (the API approves, rejects and cancels; the engine escalates and
expires), so that people and other systems hear of a change the same way whoever made it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from remediator.domain.lifecycle import Remediation, RemediationStatus
from remediator.domain.outcomes import remediation_outcome_event
from remediator.domain.record import Stage, dedup_key, stage_for
from remediator.ports import OutboxMessage


def notice_messages(
    *,
    remediation_id: str,
    stage: Stage,
    channels: Sequence[str],
    at: datetime,
    details: Mapping[str, Any] | None = None,
) -> list[OutboxMessage]:
    """Outbox entries telling people about one stage of one remediation (queued once
    per stage: the id is the channel and ``<remediation>:<stage>``)."""
    return [
        OutboxMessage(
            id=f"{channel}:{dedup_key(remediation_id=remediation_id, stage=stage)}",
            channel=channel,
            key=remediation_id,
            payload={"remediation_id": remediation_id, "stage": stage.value, **(details or {})},
            created_at=at,
        )
        for channel in channels
    ]


def outcome_messages(
    remediation: Remediation, *, status: RemediationStatus, at: datetime, channel: str | None
) -> list[OutboxMessage]:
    """The outcome event of ``remediation`` reaching ``status`` (none without a topic)."""
    if channel is None:
        return []
    event = remediation_outcome_event(remediation, status=status, at=at)
    return [
        OutboxMessage(
            id=event["id"], channel=channel, key=remediation.service, payload=event,
            created_at=at,
        )
    ]  # fmt: skip


def status_messages(
    remediation: Remediation,
    *,
    status: RemediationStatus,
    at: datetime,
    notice_channels: Sequence[str],
    outcome_channel: str | None,
) -> list[OutboxMessage]:
    """What a change to ``status`` tells people and other systems."""
    notices = notice_messages(
        remediation_id=remediation.id, stage=stage_for(status), channels=notice_channels, at=at
    )
    return [*notices, *outcome_messages(remediation, status=status, at=at, channel=outcome_channel)]


def vote_messages(
    remediation: Remediation, *, principal: str, at: datetime, notice_channels: Sequence[str]
) -> list[OutboxMessage]:
    """One approver answered and others must still: the remediation's Slack message is
    updated to show who (one notice per principal; mail waits for the outcome)."""
    return [
        OutboxMessage(
            id=f"{channel}:{dedup_key(remediation_id=remediation.id, stage=Stage.VOTED)}"
            f":{principal}",
            channel=channel,
            key=remediation.id,
            payload={"remediation_id": remediation.id, "stage": Stage.VOTED.value},
            created_at=at,
        )
        for channel in notice_channels
        if channel == "slack"
    ]


def approved_messages(
    remediation: Remediation, *, at: datetime, notice_channels: Sequence[str]
) -> list[OutboxMessage]:
    """Every seat is filled: people see who approved (the plan's start follows)."""
    return notice_messages(
        remediation_id=remediation.id, stage=Stage.APPROVED, channels=notice_channels, at=at
    )
