"""The approval clock over the real SQLite journal: escalation at the response time
(once, naming who has not answered), expiry at the hard deadline, nothing before."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from remediator.domain.approvals import (
    ApprovalConfig,
    ApprovalRequest,
    Verdict,
    Vote,
    VoteResult,
    policy_for,
)
from remediator.domain.errors import TemporaryError
from remediator.domain.lifecycle import RemediationStatus
from remediator.engine.approvals import ApprovalTimer
from remediator.journal.sqlite import SqliteJournal
from tests.contract.builders import NOW, Clock, plant
from tests.unit.journal_helpers import outbox_messages

OUTCOMES = "kafka:remediator.outcomes"
DIRECTORY = {"product-manager": ["pam", "rita"], "tech-lead": ["lee", "tess"]}


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[SqliteJournal]:
    j = SqliteJournal(path=tmp_path / "journal.db")
    await j.open()
    yield j
    await j.close()


async def waiting(journal: SqliteJournal) -> str:
    policy = policy_for(approvers=("product-manager", "tech-lead"),
                        response_time=timedelta(minutes=30), emergency=False,
                        config=ApprovalConfig())  # fmt: skip
    request = ApprovalRequest(policy=policy, requested_at=NOW, requester="rita")
    return await plant(journal, status=RemediationStatus.AWAITING_APPROVAL, approval=request)


def timer(journal: SqliteJournal, clock: Clock) -> ApprovalTimer:
    return ApprovalTimer(journal=journal, clock=clock, notice_channels=("slack",),
                         outcome_channel=OUTCOMES, approvers_by_role=DIRECTORY)  # fmt: skip


async def test_escalates_once_at_the_response_time_naming_who_has_not_answered(
    journal: SqliteJournal,
) -> None:
    rid = await waiting(journal)
    await journal.cast_vote(rid, vote=Vote(principal="lee", verdict=Verdict.APPROVE,
                                           roles=("tech-lead",), at=NOW))  # fmt: skip
    clock = Clock(NOW + timedelta(minutes=29, seconds=59))
    clock_timer = timer(journal, clock)
    assert await clock_timer.run_once() == 0
    assert await outbox_messages(journal, "slack", limit=10) == []
    clock.advance(1)
    assert await clock_timer.run_once() == 1
    [notice] = await outbox_messages(journal, "slack", limit=10)
    assert notice.message.id == f"slack:{rid}:escalated"
    # The product manager's seat is empty; rita asked, so she is not who is waited for.
    assert notice.message.payload["waiting_for"] == [{"seat": "product-manager",
                                                      "principals": ["pam"]}]  # fmt: skip
    clock.advance(60)
    assert await clock_timer.run_once() == 0  # once
    assert len(await outbox_messages(journal, "slack", limit=10)) == 1
    found = await journal.get_remediation(rid)
    assert found is not None and found.status is RemediationStatus.AWAITING_APPROVAL
    assert found.approval is not None
    assert found.approval.request.escalated_at == NOW + timedelta(minutes=30)


async def test_expires_at_the_hard_deadline_and_a_late_approval_runs_nothing(
    journal: SqliteJournal,
) -> None:
    rid = await waiting(journal)
    clock = Clock(NOW + timedelta(hours=2) - timedelta(seconds=1))
    clock_timer = timer(journal, clock)
    assert await clock_timer.run_once() == 1  # escalated on the way
    clock.advance(1)
    assert await clock_timer.run_once() == 1
    found = await journal.get_remediation(rid)
    assert found is not None and found.status is RemediationStatus.EXPIRED
    assert found.finished_at == NOW + timedelta(hours=2)
    [event] = await outbox_messages(journal, OUTCOMES, limit=10)
    assert event.message.payload["type"] == "io.remediator.remediation.skipped"
    assert event.message.payload["data"]["status"] == "expired"
    ids = [p.message.id for p in await outbox_messages(journal, "slack", limit=10)]
    assert ids == [f"slack:{rid}:escalated", f"slack:{rid}:skipped"]
    late = Vote(principal="pam", verdict=Verdict.APPROVE, roles=("product-manager",),
                at=clock.now + timedelta(minutes=1))  # fmt: skip
    assert await journal.cast_vote(rid, vote=late) is VoteResult.NOT_WAITING
    assert await journal.runnable_remediations(limit=10) == []
    assert await clock_timer.run_once() == 0


async def test_timers_of_two_replicas_tell_people_once(journal: SqliteJournal) -> None:
    for _ in range(3):
        await waiting(journal)
    clock = Clock(NOW + timedelta(minutes=31))
    changed = await asyncio.gather(timer(journal, clock).run_once(),
                                   timer(journal, clock).run_once())  # fmt: skip
    assert sum(changed) == 3
    assert len(await outbox_messages(journal, "slack", limit=10)) == 3


class Unavailable:
    """A journal that is down (our own port): every call fails for now."""

    def __init__(self) -> None:
        self.calls = 0

    async def due_approvals(self, **_: object) -> list[object]:
        self.calls += 1
        raise TemporaryError("journal down")


async def test_the_loop_survives_an_unavailable_journal_and_looks_again() -> None:
    down = Unavailable()
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 3:
            raise asyncio.CancelledError

    clock_timer = ApprovalTimer(journal=down, sleep=sleep, interval_seconds=7)  # type: ignore[arg-type]
    with pytest.raises(asyncio.CancelledError):
        await clock_timer.run()
    assert (down.calls, slept) == (3, [7, 7, 7])
