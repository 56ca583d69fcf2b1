"""The SQLite journal keeps the lifecycle and the claims, whatever a caller asks:
transitions checked in the write's transaction, claims fenced by holder, claims of
silent instances taken over by compare-and-set, the decision cursor moved by
compare-and-set, and outbox rows leased to one relay at a time."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

import pytest

from remediator.domain.lifecycle import (
    TRANSITIONS,
    ClaimLost,
    IllegalTransition,
    Remediation,
    RemediationStatus,
    StepStatus,
    utc_text,
)
from remediator.domain.plans import ActionKind
from remediator.domain.signals import Signal, Source, Status
from remediator.journal.sqlite import SqliteJournal
from remediator.journal.sqlite.schema import schema_version
from remediator.ports import DecisionRecord, NewRemediation, OutboxMessage

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
S = RemediationStatus
PAIRS = [(old, new) for old in RemediationStatus for new in RemediationStatus]


class Clock:
    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[SqliteJournal]:
    j = SqliteJournal(path=tmp_path / "journal.db", instance="replica-a")
    await j.open()
    yield j
    await j.close()


def signal(n: int) -> Signal:
    return Signal(
        key=f"k{n}", source=Source.ALERTMANAGER, kind="HighErrorRate", status=Status.FIRING,
        service="checkout", namespace="shop", labels={"n": str(n)}, annotations={},
        starts_at=NOW, ends_at=None, received_at=NOW,
    )  # fmt: skip


def decision(seq: int, rid: str, status: RemediationStatus = S.PLANNED) -> DecisionRecord:
    remediation = NewRemediation(
        id=rid, signal_id=f"sig_{rid}", service="checkout", namespace="shop", rule="r",
        action=ActionKind.ROLLBACK, status=status, reason=None, manual=False, automated=True,
        created_at=NOW, decision={"steps": []}, explanation="test",
    )  # fmt: skip
    return DecisionRecord(
        signal_seq=seq, signal_id=f"sig_{rid}", service="checkout", outcome="plan",
        reason=None, rule="r", decided_at=NOW, explanation="test", remediation=remediation,
    )  # fmt: skip


async def planned(journal: SqliteJournal, *rids: str) -> None:
    """Remediations as the decider journals them, one decision each."""
    cursor = (await journal.undecided_signals(limit=1)).cursor
    records = [decision(cursor + n + 1, rid) for n, rid in enumerate(rids)]
    assert await journal.record_decisions(records, cursor=cursor, through_seq=cursor + len(rids))


async def force_status(
    journal: SqliteJournal, rid: str, status: RemediationStatus, *, claimed_by: str | None
) -> None:
    """Put a remediation in any status, unfinished (set-up only: no journal call may)."""
    stamp = utc_text(NOW) if claimed_by else None
    await journal.database.transaction(
        lambda conn: conn.execute(
            "UPDATE remediations SET status = ?, claimed_by = ?, claimed_at = ? WHERE id = ?",
            (status, claimed_by, stamp, rid),
        )
    )


async def dump(journal: SqliteJournal) -> list[str]:
    """Every row of every table: what "nothing was written" compares."""
    return await journal.database.read(lambda conn: list(conn.iterdump()))


def message(n: int, channel: str = "kafka:outcomes") -> OutboxMessage:
    return OutboxMessage(
        id=f"m{n}", channel=channel, key="checkout", payload={"n": n}, created_at=NOW
    )


# -- transitions: every pair of statuses, at the journal ---------------------------------
@pytest.mark.parametrize("old", list(RemediationStatus), ids=str)
async def test_a_finish_is_written_only_when_the_lifecycle_allows_it(
    journal: SqliteJournal, old: RemediationStatus
) -> None:
    rids = {new: f"rem_{new.name.lower()}" for new in RemediationStatus}
    await planned(journal, *rids.values())
    for rid in rids.values():
        await force_status(journal, rid, old, claimed_by="replica-a")
    for new, rid in rids.items():
        before = await dump(journal)
        finish = journal.finish_remediation(
            rid, holder="replica-a", status=new, reason="why", at=NOW, outbox=[message(1)]
        )
        if new in TRANSITIONS[old]:
            await finish
            item = await journal.get_remediation(rid)
            assert item is not None
            assert (item.status, item.finished_at, item.reason) == (new, NOW, "why")
        else:
            with pytest.raises(IllegalTransition) as refused:
                await finish
            assert (refused.value.old, refused.value.new) == (old, new)
            assert await dump(journal) == before  # nothing written, not even the outbox


@pytest.mark.parametrize("old", list(RemediationStatus), ids=str)
async def test_a_claim_is_written_only_when_the_lifecycle_allows_it(
    journal: SqliteJournal, old: RemediationStatus
) -> None:
    rids = {new: f"rem_{new.name.lower()}" for new in RemediationStatus}
    await planned(journal, *rids.values())
    for rid in rids.values():
        await force_status(journal, rid, old, claimed_by=None)
    for new, rid in rids.items():
        before = await dump(journal)
        claim = journal.claim_remediation(rid, by="replica-a", at=NOW, to=new, outbox=[message(2)])
        if new in TRANSITIONS[old]:
            assert await claim
            item = await journal.get_remediation(rid)
            assert item is not None
            assert (item.status, item.claimed_by, item.finished_at) == (new, "replica-a", None)
        else:
            with pytest.raises(IllegalTransition):
                await claim
            assert await dump(journal) == before


def test_the_pairs_cover_every_status_both_ways() -> None:
    # The two tests above try each of these: 121 pairs, allowed and refused alike.
    allowed = [(old, new) for old, new in PAIRS if new in TRANSITIONS[old]]
    assert len(PAIRS) == len(RemediationStatus) ** 2
    assert 0 < len(allowed) < len(PAIRS)


@pytest.mark.parametrize("old", list(RemediationStatus), ids=str)
async def test_only_a_plan_awaiting_approval_is_approved(
    journal: SqliteJournal, old: RemediationStatus
) -> None:
    await planned(journal, "rem_x")
    await force_status(journal, "rem_x", old, claimed_by=None)
    before = await dump(journal)
    approved = await journal.approve_remediation("rem_x", by="lead", at=NOW, roles=("dba",))
    item = await journal.get_remediation("rem_x")
    assert item is not None
    if old is S.AWAITING_APPROVAL:
        assert approved
        assert (item.status, item.approved_by, item.approved_as) == (S.PLANNED, "lead", ("dba",))
    else:
        assert not approved
        assert await dump(journal) == before


async def test_a_remediation_cannot_begin_in_a_status_that_is_not_initial(
    journal: SqliteJournal,
) -> None:
    before = await dump(journal)
    for status in (S.RUNNING, S.SUCCEEDED, S.NEEDS_HUMAN, S.CANCELLED):
        with pytest.raises(Exception, match="cannot begin"):
            await journal.record_decisions([decision(1, "rem_x", status)], cursor=0, through_seq=1)
    assert await dump(journal) == before


async def test_the_same_end_again_is_no_write_and_another_is_refused(
    journal: SqliteJournal,
) -> None:
    # A finish whose first write outlived the caller's deadline (but stood) is retried.
    await planned(journal, "rem_x")
    assert await journal.claim_remediation("rem_x", by="replica-a", at=NOW, to=S.RUNNING)
    await journal.finish_remediation(
        "rem_x", holder="replica-a", status=S.SUCCEEDED, reason=None, at=NOW
    )
    before = await dump(journal)
    later = NOW + timedelta(minutes=1)
    await journal.finish_remediation(
        "rem_x", holder="replica-a", status=S.SUCCEEDED, reason=None, at=later
    )
    assert await dump(journal) == before
    with pytest.raises(IllegalTransition):
        await journal.finish_remediation(
            "rem_x", holder="replica-a", status=S.FAILED, reason="no", at=later
        )
    assert await dump(journal) == before


# -- claims: fenced by holder, taken over by compare-and-set -------------------------------
async def test_writes_of_an_instance_that_lost_the_claim_are_refused(
    journal: SqliteJournal,
) -> None:
    await planned(journal, "rem_x")
    assert await journal.claim_remediation("rem_x", by="replica-a", at=NOW, to=S.RUNNING)
    await journal.step_started("rem_x", holder="replica-a", idx=0, kind="rollout_undo", at=NOW)
    assert await journal.take_over_claim("rem_x", from_holder="replica-a", by="replica-b", at=NOW)
    before = await dump(journal)
    stale: list[Callable[[], Awaitable[None]]] = [
        lambda: journal.step_started(
            "rem_x", holder="replica-a", idx=1, kind="wait_rollout", at=NOW
        ),
        lambda: journal.step_finished(
            "rem_x", holder="replica-a", idx=0, status=StepStatus.SUCCEEDED, detail={}, at=NOW
        ),
        lambda: journal.finish_remediation(
            "rem_x",
            holder="replica-a",
            status=S.SUCCEEDED,
            reason=None,
            at=NOW,
            outbox=[message(1)],
        ),
    ]
    for write in stale:
        with pytest.raises(ClaimLost) as lost:
            await write()
        assert (lost.value.remediation_id, lost.value.holder) == ("rem_x", "replica-a")
    assert await dump(journal) == before
    # The new holder carries on where the timeline stands.
    await journal.step_finished(
        "rem_x", holder="replica-b", idx=0, status=StepStatus.FAILED, detail={"e": 1}, at=NOW
    )
    await journal.finish_remediation(
        "rem_x", holder="replica-b", status=S.NEEDS_HUMAN, reason="checked", at=NOW
    )
    item = await journal.get_remediation("rem_x")
    assert item is not None
    assert (item.status, item.claimed_by) == (S.NEEDS_HUMAN, "replica-b")
    assert [(s.idx, s.status, s.detail) for s in item.steps or ()] == [
        (0, StepStatus.FAILED, {"e": 1})
    ]


async def test_an_unclaimed_plan_takes_no_step_and_no_end(journal: SqliteJournal) -> None:
    await planned(journal, "rem_x")
    before = await dump(journal)
    with pytest.raises(ClaimLost):
        await journal.step_started("rem_x", holder="replica-a", idx=0, kind="x", at=NOW)
    with pytest.raises(ClaimLost):
        await journal.finish_remediation(
            "rem_x", holder="replica-a", status=S.FAILED, reason=None, at=NOW
        )
    assert await dump(journal) == before


async def test_a_claim_is_taken_over_once_and_only_from_its_holder(
    journal: SqliteJournal,
) -> None:
    await planned(journal, "rem_x", "rem_done")
    for rid in ("rem_x", "rem_done"):
        assert await journal.claim_remediation(rid, by="replica-a", at=NOW, to=S.RUNNING)
    await journal.finish_remediation(
        "rem_done", holder="replica-a", status=S.SUCCEEDED, reason=None, at=NOW
    )
    later = NOW + timedelta(minutes=1)
    # Two replicas find replica-a gone at once: the compare-and-set lets one through.
    assert await journal.take_over_claim("rem_x", from_holder="replica-a", by="replica-b", at=later)
    assert not await journal.take_over_claim(
        "rem_x", from_holder="replica-a", by="replica-c", at=later
    )
    assert not await journal.take_over_claim(
        "rem_done", from_holder="replica-a", by="replica-c", at=later
    )
    item = await journal.get_remediation("rem_x")
    assert item is not None
    # Still running, started when it was first claimed; only the holder changed.
    assert (item.claimed_by, item.claimed_at, item.status) == ("replica-b", NOW, S.RUNNING)
    done = await journal.get_remediation("rem_done")
    assert done is not None and done.claimed_by == "replica-a"


async def test_claims_to_recover_are_ones_own_and_those_of_silent_instances(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal.db"
    clock_a, clock_b = Clock(), Clock()
    a = SqliteJournal(path=path, instance="replica-a", clock=clock_a)
    b = SqliteJournal(path=path, instance="replica-b", clock=clock_b)
    await a.open()
    await b.open()
    try:
        await planned(b, "rem_a", "rem_b", "rem_never_beat", "rem_done")
        for rid, holder in (
            ("rem_a", "replica-a"),
            ("rem_b", "replica-b"),
            ("rem_never_beat", "replica-z"),
            ("rem_done", "replica-z"),
        ):
            assert await b.claim_remediation(rid, by=holder, at=NOW, to=S.RUNNING)  # fmt: skip
        await b.finish_remediation(
            "rem_done", holder="replica-z", status=S.FAILED, reason=None, at=NOW
        )
        await a.check_writable()  # replica-a beats at NOW
        await b.check_writable()

        def ids(claims: list[Remediation]) -> list[str]:
            return [c.id for c in claims]

        # replica-a beat within the window: its claim is its own business.
        fresh = await b.unfinished_claims(
            holder="replica-b", stale_before=NOW - timedelta(seconds=30)
        )
        assert ids(fresh) == ["rem_b", "rem_never_beat"]
        # 31 s later without another beat, replica-a is gone too.
        later = NOW + timedelta(seconds=31)
        stale = await b.unfinished_claims(
            holder="replica-b", stale_before=later - timedelta(seconds=30)
        )
        assert ids(stale) == ["rem_a", "rem_b", "rem_never_beat"]
        assert all(c.decision is not None and c.steps == () for c in stale)
        # A beat brings it back.
        clock_a.now = later
        await a.check_writable()
        again = await b.unfinished_claims(
            holder="replica-b", stale_before=later - timedelta(seconds=30)
        )
        assert ids(again) == ["rem_b", "rem_never_beat"]
        beats = await b.database.read(
            lambda conn: conn.execute(
                "SELECT instance, beat_at FROM heartbeats ORDER BY 1"
            ).fetchall()
        )
        assert beats == [("replica-a", utc_text(later)), ("replica-b", utc_text(NOW))]
    finally:
        await a.close()
        await b.close()


# -- deciding exactly once -----------------------------------------------------------------
async def test_decisions_for_a_cursor_that_moved_are_refused_and_nothing_is_written(
    journal: SqliteJournal,
) -> None:
    await journal.record_signals([signal(1), signal(2)])
    first = await journal.undecided_signals(limit=10)
    second = await journal.undecided_signals(limit=10)  # another replica read the same
    assert (first.cursor, [s.seq for s in first.signals]) == (0, [1, 2])
    assert await journal.record_decisions(
        [decision(1, "rem_1"), decision(2, "rem_2")],
        cursor=first.cursor, through_seq=2, outbox=[message(1)],
    )  # fmt: skip
    before = await dump(journal)
    assert not await journal.record_decisions(
        [decision(1, "rem_other")],
        cursor=second.cursor, through_seq=2, outbox=[message(9)],
    )  # fmt: skip
    assert await dump(journal) == before
    after = await journal.undecided_signals(limit=10)
    assert (after.cursor, list(after.signals)) == (2, [])


# -- the outbox, leased to one relay at a time ---------------------------------------------
async def lease(journal: SqliteJournal, holder: str, at: datetime, *, limit: int = 10) -> list[str]:
    pending = await journal.pending(
        channel="kafka:outcomes", limit=limit, holder=holder, at=at, lease_seconds=60
    )
    return [p.message.id for p in pending]


async def test_two_relays_never_hold_the_same_messages_until_a_lease_expires(
    journal: SqliteJournal,
) -> None:
    await journal.enqueue([message(n) for n in range(4)])
    assert await lease(journal, "replica-a", NOW, limit=2) == ["m0", "m1"]
    # replica-b gets nothing while replica-a holds the oldest: the channel keeps its order.
    for seconds in (1, 30, 59):
        assert await lease(journal, "replica-b", NOW + timedelta(seconds=seconds)) == []
    # The holder itself is offered its own rows again (a relay that restarted).
    assert await lease(journal, "replica-a", NOW + timedelta(seconds=1), limit=2) == ["m0", "m1"]
    # replica-a never marked them: once its lease expired they go to replica-b.
    expired = NOW + timedelta(seconds=62)
    assert await lease(journal, "replica-b", expired) == ["m0", "m1", "m2", "m3"]
    assert await lease(journal, "replica-a", expired + timedelta(seconds=1)) == []
    await journal.mark_published(ids=["m0", "m1", "m2"], at=expired)
    assert await lease(journal, "replica-b", expired + timedelta(seconds=2)) == ["m3"]
    assert await journal.outbox_backlog() == {"kafka:outcomes": 1}


async def test_a_failed_attempt_releases_the_lease_at_once(journal: SqliteJournal) -> None:
    await journal.enqueue([message(0)])
    assert await lease(journal, "replica-a", NOW) == ["m0"]
    await journal.mark_failed_attempt(ids=["m0"], error="broker down")
    [again] = await journal.pending(
        channel="kafka:outcomes", limit=10, holder="replica-b", at=NOW, lease_seconds=60
    )
    assert (again.message.id, again.attempts) == ("m0", 1)


async def test_a_dead_message_is_never_offered_again(journal: SqliteJournal) -> None:
    await journal.enqueue([message(0), message(1)])
    assert await lease(journal, "replica-a", NOW) == ["m0", "m1"]
    await journal.mark_dead(ids=["m0"], error="bad payload", at=NOW)
    await journal.mark_published(ids=["m1"], at=NOW)
    assert await lease(journal, "replica-b", NOW + timedelta(hours=1)) == []


# -- a journal written by the previous version ----------------------------------------------
def schema_8(path: Path) -> None:
    """A journal as version 8 of the schema left it, with a row of each kind 0009 touches."""
    scripts = sorted(
        entry
        for entry in resources.files("remediator.journal.sqlite").joinpath("migrations").iterdir()
        if entry.name.endswith(".sql") and int(entry.name.split("_")[0]) <= 8
    )
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        for entry in scripts:
            conn.executescript(entry.read_text())
        conn.execute("PRAGMA user_version = 8")
        stamp = utc_text(NOW)
        rows = [
            # A rehearsal by an executor running dry: version 8 left it 'running'.
            ("rem_rehearsed", "running", "host-1", stamp, stamp),
            ("rem_in_flight", "running", "host-1", stamp, None),
            ("rem_waiting", "planned", None, None, None),
        ]
        conn.executemany(
            "INSERT INTO remediations (id, signal_id, service, action, status, created_at,"
            " updated_at, decision, explanation, claimed_by, claimed_at, finished_at)"
            " VALUES (?, 's', 'checkout', 'rollback', ?, ?, ?, '{\"steps\": []}', '', ?, ?, ?)",
            [(rid, status, stamp, stamp, by, at, done) for rid, status, by, at, done in rows],
        )
        conn.execute(
            "INSERT INTO heartbeat (id, beat_at, instance) VALUES (1, ?, 'host-1:42')", (stamp,)
        )
        conn.execute(
            "INSERT INTO outbox (id, channel, key, payload, created_at)"
            " VALUES ('m0', 'kafka:outcomes', 'checkout', '{}', ?)",
            (stamp,),
        )


async def test_a_journal_of_schema_8_is_migrated_and_keeps_working(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    schema_8(path)
    journal = SqliteJournal(path=path, instance="host-1", clock=Clock(NOW))
    await journal.open()
    try:
        rehearsed = await journal.get_remediation("rem_rehearsed")
        assert rehearsed is not None and rehearsed.status is S.DRY_RUN
        # The claim in flight is the instance's own, and still recoverable.
        claims = await journal.unfinished_claims(holder="host-1", stale_before=NOW)
        assert [c.id for c in claims] == ["rem_in_flight"]
        await journal.finish_remediation(
            "rem_in_flight", holder="host-1", status=S.NEEDS_HUMAN, reason="restart", at=NOW
        )
        assert await journal.claim_remediation("rem_waiting", by="host-1", at=NOW, to=S.RUNNING)
        # Messages queued before the upgrade are leased like any other.
        assert await lease(journal, "host-1", NOW) == ["m0"]
        await journal.check_writable()
        beats = await journal.database.read(
            lambda conn: conn.execute("SELECT instance FROM heartbeats ORDER BY 1").fetchall()
        )
        assert beats == [("host-1",), ("host-1:42",)]
    finally:
        await journal.close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        # Brought to this build's version (9 added heartbeats; later ones keep them).
        assert conn.execute("PRAGMA user_version").fetchone()[0] == schema_version() >= 9


async def test_plans_waiting_before_approval_requests_get_the_default_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v9.db"
    scripts = sorted(
        entry
        for entry in resources.files("remediator.journal.sqlite").joinpath("migrations").iterdir()
        if entry.name.endswith(".sql") and int(entry.name.split("_")[0]) <= 9
    )
    created = NOW - timedelta(days=3)  # the plan: waiting three days
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        for entry in scripts:
            conn.executescript(entry.read_text())
        conn.execute("PRAGMA user_version = 9")
        stamp = utc_text(created)
        conn.executemany(
            "INSERT INTO remediations (id, signal_id, service, action, status, created_at,"
            " updated_at, decision, explanation) VALUES (?, 's', 'checkout', 'rollback', ?,"
            " ?, ?, ?, '')",
            [
                ("rem_gate", "awaiting_approval", stamp, stamp,
                 '{"approvers": ["dba", "tech-lead"], "steps": []}'),
                ("rem_open", "awaiting_approval", stamp, stamp, '{"steps": []}'),
                ("rem_done", "succeeded", stamp, stamp, '{"approvers": ["dba"], "steps": []}'),
            ],
        )  # fmt: skip
    journal = SqliteJournal(path=path, instance="host-1", clock=Clock(NOW))
    await journal.open()
    try:
        gate = await journal.get_remediation("rem_gate")
        assert gate is not None and gate.approval is not None
        request = gate.approval.request
        assert [s.label for s in request.policy.seats] == ["dba", "tech-lead"]
        assert request.requested_at == created
        assert request.response_due_at == created + timedelta(hours=1)
        assert request.expires_at == created + timedelta(hours=4)
        opened = await journal.get_remediation("rem_open")
        assert opened is not None and opened.approval is not None
        assert [s.label for s in opened.approval.request.policy.seats] == ["any approver"]
        done = await journal.get_remediation("rem_done")
        assert done is not None and done.approval is None
        # Long past their expiry: the approval clock ends them at its first look.
        due = await journal.due_approvals(now=NOW, limit=10)
        assert [r.id for r in due] == ["rem_gate", "rem_open"]
    finally:
        await journal.close()
