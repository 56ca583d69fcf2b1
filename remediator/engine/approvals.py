"""The approval clock: escalates a plan nobody approved within its response time, and
ends one still waiting at its hard expiry ``expired`` (it never runs afterwards, even if
an approval arrives late: the journal refuses votes on a plan no longer waiting).

Every replica runs it. Each step is a compare-and-set in the journal (escalated once,
expired once, and only while the plan still awaits approval), written with its notices
and outcome event in one transaction, so two replicas looking at once tell people once.
The clock and the sleep are injected: tests move time, they do not wait for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from remediator.domain.approvals import ApprovalState, Pending
from remediator.domain.errors import TemporaryError
from remediator.domain.lifecycle import Remediation, RemediationStatus
from remediator.domain.record import Stage
from remediator.messages import notice_messages, status_messages
from remediator.ports import ApprovalStore

log = logging.getLogger(__name__)

CHECK_SECONDS = 15.0
BATCH = 100


class ApprovalJournal(ApprovalStore, Protocol):
    """The journal role the approval clock uses."""


def waiting_for(
    state: ApprovalState, approvers_by_role: Mapping[str, Sequence[str]]
) -> list[dict[str, Any]]:
    """Who has not answered: each seat still empty, and the principals who could fill it
    (neither the requester nor anyone who voted already)."""
    outcome = state.outcome
    if not isinstance(outcome, Pending):
        return []
    answered = {vote.principal for vote in state.votes} | {state.request.requester}
    return [
        {
            "seat": seat.label,
            "principals": sorted(
                {name for role in seat.roles for name in approvers_by_role.get(role, ())} - answered
            ),
        }
        for seat in outcome.missing
    ]


class ApprovalTimer:
    def __init__(
        self,
        *,
        journal: ApprovalJournal,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        interval_seconds: float = CHECK_SECONDS,
        notice_channels: Sequence[str] = (),
        outcome_channel: str | None = None,
        approvers_by_role: Mapping[str, Sequence[str]] | None = None,
        on_escalated: Callable[[], None] | None = None,
        on_expired: Callable[[], None] | None = None,
        on_internal_error: Callable[[str], None] | None = None,
    ) -> None:
        """``approvers_by_role`` names the principals holding each approver role, for the
        escalation notice's "who has not answered"."""
        self._journal = journal
        self._clock = clock
        self._sleep = sleep
        self._interval = interval_seconds
        self._notice_channels = tuple(notice_channels)
        self._outcome_channel = outcome_channel
        self._approvers_by_role = approvers_by_role or {}
        self._on_escalated = on_escalated
        self._on_expired = on_expired
        self._on_internal_error = on_internal_error

    async def run(self) -> None:
        """Root task: look every ``interval_seconds`` until cancelled; errors wait for
        the next look (the journal keeps what is due until it is done)."""
        while True:
            try:
                await self.run_once()
            except TemporaryError as exc:
                log.warning("approval clock paused, journal unavailable: %s", exc)
            except Exception as exc:
                log.error("approval clock failed (%s); retrying in %.0fs",
                          type(exc).__name__, self._interval, exc_info=exc)  # fmt: skip
                if self._on_internal_error is not None:
                    self._on_internal_error(type(exc).__name__)
            await self._sleep(self._interval)

    async def run_once(self) -> int:
        """Escalate and expire what is due now; return how many changed here."""
        now = self._clock()
        changed = 0
        for item in await self._journal.due_approvals(now=now, limit=BATCH):
            state = item.approval
            if state is None:
                continue
            if state.request.expired(now):
                changed += await self._expire(item, state, now)
            elif state.request.escalation_due(now):
                changed += await self._escalate(item, state, now)
        return changed

    async def _expire(self, item: Remediation, state: ApprovalState, now: datetime) -> int:
        messages = status_messages(
            item, status=RemediationStatus.EXPIRED, at=now,
            notice_channels=self._notice_channels, outcome_channel=self._outcome_channel,
        )  # fmt: skip
        if not await self._journal.expire_approval(item.id, at=now, outbox=messages):
            return 0  # approved, rejected or expired meanwhile (here or on another replica)
        log.warning("%s: not approved by %s; expired, it will not run", item.id,
                    state.request.expires_at.isoformat())  # fmt: skip
        if self._on_expired is not None:
            self._on_expired()
        return 1

    async def _escalate(self, item: Remediation, state: ApprovalState, now: datetime) -> int:
        missing = waiting_for(state, self._approvers_by_role)
        messages = notice_messages(
            remediation_id=item.id, stage=Stage.ESCALATED, channels=self._notice_channels,
            at=now, details={"waiting_for": missing},
        )  # fmt: skip
        if not await self._journal.mark_escalated(item.id, at=now, outbox=messages):
            return 0
        who = "; ".join(
            f"{entry['seat']} ({', '.join(entry['principals']) or 'nobody configured'})"
            for entry in missing
        )
        log.warning("%s: no answer within the response time; escalated, waiting for %s",
                    item.id, who or "nobody")  # fmt: skip
        if self._on_escalated is not None:
            self._on_escalated()
        return 1
