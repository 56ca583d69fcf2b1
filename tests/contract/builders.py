"""Signals, decisions and remediations for the contract tests, built through the ports."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from remediator.domain.approvals import ApprovalRequest
from remediator.domain.lifecycle import RemediationStatus
from remediator.domain.plans import ActionKind
from remediator.domain.signals import Signal, Source, Status
from remediator.ports import DecisionRecord, Journal, NewRemediation, OutboxMessage

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
_ids = itertools.count(1)


class Clock:
    """A journal's wall clock, moved by the test."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def signal(
    n: int,
    *,
    service: str | None = "checkout",
    kind: str = "HighErrorRate",
    status: Status = Status.FIRING,
    source: Source = Source.ALERTMANAGER,
    received_at: datetime = NOW,
    starts_at: datetime | None = NOW,
    received_by: str | None = None,
) -> Signal:
    return Signal(
        key=f"key-{n}",
        source=source,
        kind=kind,
        status=status,
        service=service,
        namespace="shop",
        labels={"alertname": kind, "n": str(n)},
        annotations={"summary": f"signal {n}"},
        starts_at=starts_at,
        ends_at=None,
        received_at=received_at,
        raw={"n": n, "nested": {"list": [1, 2, 3]}},
        received_by=received_by,
    )


def new_remediation(
    sig: Signal,
    *,
    status: RemediationStatus = RemediationStatus.PLANNED,
    created_at: datetime = NOW,
    automated: bool = True,
    action: ActionKind | None = ActionKind.ROLLBACK,
    rid: str | None = None,
    approval: ApprovalRequest | None = None,
    approvers: tuple[str, ...] = (),
) -> NewRemediation:
    return NewRemediation(
        id=rid or f"rem_{next(_ids):06d}",
        signal_id=sig.id,
        service=sig.service or "checkout",
        namespace=sig.namespace,
        rule="rollback-on-errors",
        action=action,
        status=status,
        reason="held back" if status is RemediationStatus.SKIPPED else None,
        manual=False,
        automated=automated,
        created_at=created_at,
        decision={"plan": {"action": "rollback", "steps": [{"kind": "rollout_undo"}]}}
        | ({"approvers": list(approvers)} if approvers else {}),
        explanation=f"{sig.kind} on {sig.service}",
        approval=approval,
    )  # fmt: skip


def message(
    n: int, *, channel: str = "kafka:remediator.outcomes", at: datetime = NOW
) -> OutboxMessage:
    return OutboxMessage(
        id=f"msg-{n}", channel=channel, key=f"k{n}", payload={"n": n, "what": "outcome"},
        created_at=at,
    )  # fmt: skip


def decision(
    seq: int, sig: Signal, remediation: NewRemediation | None = None, *, at: datetime = NOW
) -> DecisionRecord:
    return DecisionRecord(
        signal_seq=seq,
        signal_id=sig.id,
        service=sig.service,
        outcome="plan" if remediation else "no_action",
        reason=None if remediation else "no_rule",
        rule=remediation.rule if remediation else None,
        decided_at=at,
        explanation="decided",
        remediation=remediation,
    )


async def decide_all(journal: Journal, **remediation: Any) -> list[str]:
    """Decide every undecided signal with a remediation each; return their ids."""
    batch = await journal.undecided_signals(limit=10_000)
    records, ids = [], []
    for stored in batch.signals:
        new = new_remediation(stored.signal, **remediation)
        records.append(decision(stored.seq, stored.signal, new))
        ids.append(new.id)
    through = batch.signals[-1].seq if batch.signals else batch.cursor
    assert await journal.record_decisions(records, cursor=batch.cursor, through_seq=through)
    return ids


async def plant(
    journal: Journal, *, status: RemediationStatus = RemediationStatus.PLANNED, **more: Any
) -> str:
    """One new signal decided into one remediation in ``status`` (an initial one)."""
    n = next(_ids)
    await journal.record_signals([signal(10_000 + n, **more.pop("signal", {}))])
    (rid,) = await decide_all(journal, status=status, **more)
    return rid


async def running(journal: Journal, *, holder: str = "replica-a", at: datetime = NOW) -> str:
    """A remediation claimed by ``holder`` and running."""
    rid = await plant(journal)
    assert await journal.claim_remediation(rid, by=holder, at=at, to=RemediationStatus.RUNNING)
    return rid


async def ended_remediation(
    journal: Journal,
    status: RemediationStatus,
    *,
    service: str = "checkout",
    created_at: datetime = NOW,
    recovered_after: timedelta | None = None,
    action: ActionKind | None = ActionKind.ROLLBACK,
    reason: str | None = None,
    holder: str = "replica-a",
) -> str:
    """One remediation of ``service`` created at ``created_at`` (decided from a new
    signal) and now in ``status``: an initial status as decided, any other claimed and
    finished ``recovered_after`` its creation (default one minute)."""
    n = next(_ids)
    await journal.record_signals([signal(20_000 + n, service=service)])
    batch = await journal.undecided_signals(limit=10)
    (stored,) = batch.signals
    initial = status if status.initial else RemediationStatus.PLANNED
    new = new_remediation(stored.signal, status=initial, action=action, created_at=created_at)
    if reason is not None:
        new = dataclasses.replace(new, reason=reason)
    assert await journal.record_decisions(
        [decision(stored.seq, stored.signal, new)], cursor=batch.cursor, through_seq=stored.seq
    )
    if not status.initial:
        end = new.created_at + (recovered_after or timedelta(minutes=1))
        running = RemediationStatus.RUNNING
        assert await journal.claim_remediation(new.id, by=holder, at=end, to=running)
        await journal.finish_remediation(new.id, holder=holder, status=status, reason=None,
                                         at=end)  # fmt: skip
    return new.id
