"""Replicas on one journal: an executor takes over the plans of an instance that stopped
beating its heartbeat, periodically and never a live one's; the taken-over plan waits
for its service's Lease; the instance that lost the claim ends its run quietly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from remediator.domain.lifecycle import Remediation, RemediationStatus, StepStatus
from remediator.domain.plans import StepKind
from remediator.domain.rules import RulePack
from remediator.engine.executor import Executor
from remediator.journal.sqlite import SqliteJournal
from remediator.rulefiles import load_rule_pack_from_path
from tests.unit.engine.test_decider import NOW, RULES, Clock
from tests.unit.engine.test_executor import (
    FakeLock,
    FakeRunner,
    GatedRunner,
    HeldElsewhere,
    Hooks,
    executor,
    planned_rollback,
)

STALE = 30.0
INTERVAL = 10.0


@pytest.fixture(scope="module")
def pack() -> RulePack:
    return load_rule_pack_from_path(RULES)


class CountingJournal(SqliteJournal):
    """The real journal, counting the executor's looks for claims to recover."""

    looks = 0

    async def unfinished_claims(self, *, holder: str, stale_before: datetime) -> list[Remediation]:
        self.looks += 1
        return await super().unfinished_claims(holder=holder, stale_before=stale_before)


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW + timedelta(minutes=1))


@pytest.fixture
async def replicas(
    tmp_path: Path, clock: Clock
) -> AsyncIterator[tuple[SqliteJournal, CountingJournal]]:
    """Two instances' journals on one file and one wall clock: replica-a, replica-b."""
    path = tmp_path / "journal.db"
    a = SqliteJournal(path=path, instance="replica-a", clock=clock)
    b = CountingJournal(path=path, instance="replica-b", clock=clock)
    await a.open()
    await b.open()
    yield a, b
    await a.close()
    await b.close()


async def one_pass(ex: Executor) -> None:
    await ex.run_pass()
    await asyncio.gather(*list(ex._tasks))


def replica(
    journal: SqliteJournal, runner: FakeRunner, name: str, clock: Clock, **kwargs: object
) -> Executor:
    return executor(journal, runner, instance_id=name, clock=clock, claim_stale_seconds=STALE,
                    recovery_interval_seconds=INTERVAL, **kwargs)  # fmt: skip


async def test_a_live_instance_keeps_its_claim_and_a_silent_one_loses_it(
    replicas: tuple[SqliteJournal, CountingJournal], clock: Clock, pack: RulePack
) -> None:
    a, b = replicas
    rid = await planned_rollback(b, pack)
    # replica-a claimed the plan and finished its first step.
    assert await a.claim_remediation(rid, by="replica-a", at=clock(), to=RemediationStatus.RUNNING)
    await a.step_started(rid, holder="replica-a", idx=0, kind="rollout_undo", at=clock())
    await a.step_finished(
        rid, holder="replica-a", idx=0, status=StepStatus.SUCCEEDED, detail={}, at=clock()
    )
    runner, hooks = FakeRunner(), Hooks()
    ex = replica(b, runner, "replica-b", clock, lock=FakeLock(), **hooks.kwargs())

    # Two minutes of replica-a beating every 5 s, replica-b passing every second.
    for second in range(120):
        if second % 5 == 0:
            await a.check_writable()
        await one_pass(ex)
        clock.now += timedelta(seconds=1)
    assert runner.calls == []
    item = await b.get_remediation(rid)
    assert item is not None and (item.claimed_by, item.status) == ("replica-a", "running")
    # Looked every recovery interval, not on every pass.
    assert b.looks == 120 / INTERVAL

    # replica-a stops beating (SIGKILL, SIGSTOP, a cut-off node).
    last_beat = clock() - timedelta(seconds=5)
    while not runner.calls:
        await one_pass(ex)
        clock.now += timedelta(seconds=1)
        assert clock() - last_beat < timedelta(seconds=STALE + INTERVAL + 2), "never taken over"
    taken_after = (clock() - last_beat).total_seconds()
    assert STALE <= taken_after <= STALE + INTERVAL + 1
    # It resumed after the step replica-a finished, and ran to its end, once.
    assert [kind for kind, _ in runner.calls] == [
        StepKind.WAIT_ROLLOUT, StepKind.VERIFY_HEALTH, StepKind.VERIFY_CONDITION, StepKind.RECORD_EVIDENCE, StepKind.NOTIFY
    ]  # fmt: skip
    done = await b.get_remediation(rid)
    assert done is not None
    assert (done.status, done.claimed_by) == ("succeeded", "replica-b")
    assert hooks.finished == [("rollback", "succeeded")]
    assert hooks.internal_errors == []


async def test_the_instance_that_lost_its_claim_stops_quietly_and_the_new_holder_waits_for_the_lease(
    replicas: tuple[SqliteJournal, CountingJournal], clock: Clock, pack: RulePack
) -> None:
    a, b = replicas
    rid = await planned_rollback(a, pack)
    gated = GatedRunner(StepKind.WAIT_ROLLOUT)
    lock_a, hooks_a = FakeLock(), Hooks()
    ex_a = replica(a, gated, "replica-a", clock, lock=lock_a, **hooks_a.kwargs())
    await a.check_writable()
    await ex_a.run_pass()
    await gated.entered.wait()  # replica-a is in the middle of wait_rollout ...

    # ... and stops beating (SIGSTOP). replica-b takes the claim over, but the service's
    # Lease is still replica-a's: no step runs there meanwhile.
    clock.now += timedelta(seconds=STALE + 1)
    lease_b, runner_b, hooks_b = HeldElsewhere(clock), FakeRunner(), Hooks()
    ex_b = replica(b, runner_b, "replica-b", clock, lock=lease_b, rand=lambda: 1.0,
                   **hooks_b.kwargs())  # fmt: skip
    await one_pass(ex_b)
    item = await b.get_remediation(rid)
    assert item is not None and item.claimed_by == "replica-b"
    assert lease_b.attempts and runner_b.calls == []

    # replica-a resumes: its step ends, and the journal refuses what it writes next.
    gated.release.set()
    await asyncio.gather(*list(ex_a._tasks))
    assert [kind for kind, _ in gated.calls] == [StepKind.ROLLOUT_UNDO, StepKind.WAIT_ROLLOUT]
    assert hooks_a.finished == [] and hooks_a.internal_errors == []
    assert lock_a.holding == [] and ex_a._busy == set()  # its Lease is given up
    item = await a.get_remediation(rid)
    assert item is not None
    assert (item.status, item.finished_at, item.claimed_by) == ("running", None, "replica-b")
    assert [(s.kind, s.status) for s in item.steps or ()] == [
        ("rollout_undo", "succeeded"), ("wait_rollout", "started")
    ]  # fmt: skip

    # Once the Lease is free, replica-b settles the plan from its timeline: the step in
    # flight only waits, so it runs again, and the plan ends there.
    lease_b.free = True
    for _ in range(20):
        await one_pass(ex_b)
        clock.now += timedelta(seconds=1)
    assert [kind for kind, _ in runner_b.calls] == [
        StepKind.WAIT_ROLLOUT, StepKind.VERIFY_HEALTH, StepKind.VERIFY_CONDITION, StepKind.RECORD_EVIDENCE, StepKind.NOTIFY
    ]  # fmt: skip
    done = await b.get_remediation(rid)
    assert done is not None and (done.status, done.claimed_by) == ("succeeded", "replica-b")
    assert hooks_b.finished == [("rollback", "succeeded")]
