"""The executor over the real SQLite journal, with an in-memory StepRunner (our own port)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from remediator.domain.errors import PermanentError, TemporaryError
from remediator.domain.plans import Step, StepKind
from remediator.domain.rules import RulePack
from remediator.engine.decider import DecisionEngine
from remediator.engine.executor import Executor
from remediator.journal.sqlite import SqliteJournal
from remediator.ports import NeedsHuman
from remediator.rulefiles import load_rule_pack_from_path
from tests.unit.engine.test_decider import (
    NOW,
    RULES,
    Clock,
    FakeFacts,
    deploy_event,
    journal_alerts,
    journal_events,
)
from tests.unit.payloads import alert

READ_ONLY = {StepKind.WAIT_ROLLOUT, StepKind.VERIFY_HEALTH, StepKind.NOTIFY}


class FakeRunner:
    """Records steps; fails the ones it is told to."""

    def __init__(self, *, failures: dict[StepKind, list[Exception]] | None = None) -> None:
        self.calls: list[tuple[StepKind, bool]] = []
        self.failures = failures or {}

    async def run(
        self, step: Step, *, service: str, dry_run: bool, context: dict[str, Any]
    ) -> dict[str, Any]:
        self.calls.append((step.kind, dry_run))
        queued = self.failures.get(step.kind)
        if queued:
            raise queued.pop(0)
        return {"kind": step.kind.value, "dry_run": dry_run, "service": service}

    def resumable(self, kind: StepKind) -> bool:
        return kind in READ_ONLY


class FakeLock:
    def __init__(self, *, free: bool = True) -> None:
        self.free = free
        self.held: list[str] = []

    async def acquire(self, *, service: str, namespace: str) -> bool:
        if self.free:
            self.held.append(service)
        return self.free

    async def release(self, *, service: str, namespace: str) -> None:
        self.held.remove(service)


async def no_sleep(_: float) -> None:
    return None


@pytest.fixture(scope="module")
def pack() -> RulePack:
    return load_rule_pack_from_path(RULES)


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[SqliteJournal]:
    j = SqliteJournal(path=tmp_path / "journal.db")
    await j.open()
    yield j
    await j.close()


async def planned_rollback(journal: SqliteJournal, pack: RulePack, *, dry_run: bool = False) -> str:
    """v1 healthy, v2 deployed 8 min ago, PodNotReady since 5 min: a rollback plan."""
    await journal_events(
        journal,
        [
            deploy_event(1, at=NOW - timedelta(days=1)),
            deploy_event(2, at=NOW - timedelta(minutes=8)),
        ],
    )
    await journal_alerts(journal, [alert(name="PodNotReady", fingerprint="pnr",
                                         starts_at=(NOW - timedelta(minutes=5)).isoformat())])  # fmt: skip
    engine = DecisionEngine(journal=journal, pack=pack, facts=FakeFacts({}), dry_run=dry_run,
                            clock=Clock(NOW))  # fmt: skip
    await engine.run_once()
    [item] = (await journal.list_remediations()).items
    assert item["status"] == ("dry-run" if dry_run else "planned")
    return str(item["id"])


def executor(journal: SqliteJournal, runner: FakeRunner, **kwargs: Any) -> Executor:
    return Executor(journal=journal, runner=runner, instance_id="test-1", sleep=no_sleep,
                    clock=Clock(NOW + timedelta(minutes=1)),
                    outcome_channel="kafka:remediator.outcomes",
                    notice_channels=("slack",), **kwargs)  # fmt: skip


async def test_plan_runs_its_steps_in_order_once(journal: SqliteJournal, pack: RulePack) -> None:
    rid = await planned_rollback(journal, pack)
    runner = FakeRunner()
    lock = FakeLock()
    ex = executor(journal, runner, lock=lock)
    await ex.run_until_idle()
    assert [kind for kind, _ in runner.calls] == [
        StepKind.ROLLOUT_UNDO, StepKind.WAIT_ROLLOUT, StepKind.VERIFY_HEALTH, StepKind.NOTIFY
    ]  # fmt: skip
    assert all(not dry for _, dry in runner.calls)
    item = await journal.get_remediation(rid)
    assert item is not None
    assert item["status"] == "succeeded" and item["finished_at"]
    assert [s["status"] for s in item["steps"]] == ["succeeded"] * 4
    assert item["steps"][0]["detail"]["kind"] == "rollout_undo"
    assert lock.held == []
    # Nothing runs twice: a second pass finds nothing to do.
    await ex.run_until_idle()
    assert len(runner.calls) == 4
    events = [p.message.payload["type"] for p in
              await journal.pending(channel="kafka:remediator.outcomes", limit=50)]  # fmt: skip
    assert events == [
        "io.remediator.remediation.started",
        "io.remediator.remediation.succeeded",
        "dev.cdevents.service.rolledback.0.2.0",
    ]
    notices = [p.message.id for p in await journal.pending(channel="slack", limit=50)]
    assert notices == [f"slack:{rid}:started", f"slack:{rid}:succeeded"]


async def test_permanent_failure_stops_the_plan(journal: SqliteJournal, pack: RulePack) -> None:
    rid = await planned_rollback(journal, pack)
    runner = FakeRunner(
        failures={StepKind.WAIT_ROLLOUT: [PermanentError("progress deadline exceeded")]}
    )
    await executor(journal, runner).run_until_idle()
    assert [kind for kind, _ in runner.calls] == [StepKind.ROLLOUT_UNDO, StepKind.WAIT_ROLLOUT]
    item = await journal.get_remediation(rid)
    assert item is not None
    assert item["status"] == "failed"
    assert "progress deadline exceeded" in item["reason"]
    assert [s["status"] for s in item["steps"]] == ["succeeded", "failed"]


async def test_temporary_failures_are_retried(journal: SqliteJournal, pack: RulePack) -> None:
    rid = await planned_rollback(journal, pack)
    runner = FakeRunner(failures={StepKind.ROLLOUT_UNDO: [TemporaryError("apiserver busy")] * 2})
    await executor(journal, runner).run_until_idle()
    item = await journal.get_remediation(rid)
    assert item is not None and item["status"] == "succeeded"
    assert [k for k, _ in runner.calls].count(StepKind.ROLLOUT_UNDO) == 3


async def test_needs_human(journal: SqliteJournal, pack: RulePack) -> None:
    rid = await planned_rollback(journal, pack)
    runner = FakeRunner(failures={StepKind.ROLLOUT_UNDO: [NeedsHuman("deployment is paused")]})
    await executor(journal, runner).run_until_idle()
    item = await journal.get_remediation(rid)
    assert item is not None
    assert (item["status"], item["reason"]) == ("needs_human", "rollout_undo: deployment is paused")


async def test_dry_run_rehearses_every_step_and_keeps_its_status(
    journal: SqliteJournal, pack: RulePack
) -> None:
    rid = await planned_rollback(journal, pack, dry_run=True)
    runner = FakeRunner()
    await executor(journal, runner).run_until_idle()
    assert len(runner.calls) == 4 and all(dry for _, dry in runner.calls)
    item = await journal.get_remediation(rid)
    assert item is not None
    assert item["status"] == "dry-run" and item["finished_at"]
    assert len(item["steps"]) == 4


async def test_two_executors_racing_run_a_plan_once(journal: SqliteJournal, pack: RulePack) -> None:
    await planned_rollback(journal, pack)
    runners = [FakeRunner(), FakeRunner()]
    executors = [executor(journal, r) for r in runners]
    await asyncio.gather(*(e.run_until_idle() for e in executors))
    assert sorted(len(r.calls) for r in runners) == [0, 4]


async def test_lock_held_elsewhere_leaves_the_plan_for_later(
    journal: SqliteJournal, pack: RulePack
) -> None:
    rid = await planned_rollback(journal, pack)
    runner = FakeRunner()
    ex = executor(journal, runner, lock=FakeLock(free=False))
    await ex.start_runnable()
    await asyncio.gather(*list(ex._tasks))
    item = await journal.get_remediation(rid)
    assert item is not None and (item["status"], item["claimed_at"]) == ("planned", None)
    assert runner.calls == []


async def crash_during(
    journal: SqliteJournal, rid: str, *, finished: int, in_flight: StepKind | None
) -> None:
    """Leave the journal as a SIGKILL would: claimed, some steps done, one maybe started."""
    at = NOW + timedelta(minutes=1)
    assert await journal.claim_remediation(rid, by="old-instance", at=at)
    item = await journal.get_remediation(rid)
    assert item is not None
    kinds = [s["kind"] for s in item["decision"]["steps"]]
    for idx in range(finished):
        await journal.step_started(rid, idx=idx, kind=kinds[idx], at=at)
        await journal.step_finished(rid, idx=idx, status="succeeded", detail={}, at=at)
    if in_flight is not None:
        assert kinds[finished] == in_flight.value
        await journal.step_started(rid, idx=finished, kind=in_flight.value, at=at)


async def test_crash_in_a_mutation_is_never_rerun(journal: SqliteJournal, pack: RulePack) -> None:
    rid = await planned_rollback(journal, pack)
    await crash_during(journal, rid, finished=0, in_flight=StepKind.ROLLOUT_UNDO)
    runner = FakeRunner()
    ex = executor(journal, runner)
    await ex.recover()
    await asyncio.gather(*list(ex._tasks))
    assert runner.calls == []
    item = await journal.get_remediation(rid)
    assert item is not None
    assert item["status"] == "needs_human"
    assert "whether it took effect is unknown" in item["reason"]


async def test_crash_in_a_wait_resumes_there(journal: SqliteJournal, pack: RulePack) -> None:
    rid = await planned_rollback(journal, pack)
    await crash_during(journal, rid, finished=1, in_flight=StepKind.WAIT_ROLLOUT)
    runner = FakeRunner()
    ex = executor(journal, runner)
    await ex.recover()
    await asyncio.gather(*list(ex._tasks))
    assert [k for k, _ in runner.calls] == [
        StepKind.WAIT_ROLLOUT,
        StepKind.VERIFY_HEALTH,
        StepKind.NOTIFY,
    ]
    item = await journal.get_remediation(rid)
    assert item is not None and item["status"] == "succeeded"


async def test_crash_between_steps_resumes_with_the_next(
    journal: SqliteJournal, pack: RulePack
) -> None:
    rid = await planned_rollback(journal, pack)
    await crash_during(journal, rid, finished=1, in_flight=None)
    runner = FakeRunner()
    ex = executor(journal, runner)
    await ex.recover()
    await asyncio.gather(*list(ex._tasks))
    assert runner.calls[0] == (StepKind.WAIT_ROLLOUT, False)
    item = await journal.get_remediation(rid)
    assert item is not None and item["status"] == "succeeded"


class GatedRunner(FakeRunner):
    """Holds one step until released, to shut down while it runs."""

    def __init__(self, gate_on: StepKind) -> None:
        super().__init__()
        self.gate_on = gate_on
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def run(
        self, step: Step, *, service: str, dry_run: bool, context: dict[str, Any]
    ) -> dict[str, Any]:
        if step.kind is self.gate_on:
            self.entered.set()
            await self.release.wait()
        return await super().run(step, service=service, dry_run=dry_run, context=context)


async def test_shutdown_lets_the_running_step_finish_then_the_restart_resumes(
    journal: SqliteJournal, pack: RulePack
) -> None:
    rid = await planned_rollback(journal, pack)
    runner = GatedRunner(StepKind.WAIT_ROLLOUT)
    ex = executor(journal, runner)
    await ex.start_runnable()
    await runner.entered.wait()
    draining = asyncio.create_task(ex.drain())
    await asyncio.sleep(0)
    runner.release.set()
    await draining
    item = await journal.get_remediation(rid)
    assert item is not None
    assert (item["status"], item["finished_at"]) == ("running", None)
    assert [(s["kind"], s["status"]) for s in item["steps"]] == [
        ("rollout_undo", "succeeded"), ("wait_rollout", "succeeded")
    ]  # fmt: skip

    restarted = FakeRunner()
    ex2 = executor(journal, restarted)
    await ex2.recover()
    await asyncio.gather(*list(ex2._tasks))
    assert [k for k, _ in restarted.calls] == [StepKind.VERIFY_HEALTH, StepKind.NOTIFY]
    item = await journal.get_remediation(rid)
    assert item is not None and item["status"] == "succeeded"


class BrokenLock(FakeLock):
    async def acquire(self, *, service: str, namespace: str) -> bool:
        raise PermanentError(f"namespace {namespace} not found")


async def test_a_lock_that_can_never_be_taken_fails_the_plan(
    journal: SqliteJournal, pack: RulePack
) -> None:
    rid = await planned_rollback(journal, pack)
    runner = FakeRunner()
    await executor(journal, runner, lock=BrokenLock()).run_until_idle()
    assert runner.calls == []
    item = await journal.get_remediation(rid)
    assert item is not None
    assert item["status"] == "failed"
    assert item["reason"] == "cannot take the lock of checkout: namespace shop not found"


async def test_a_plan_that_needs_approval_waits_until_approved(
    journal: SqliteJournal, pack: RulePack
) -> None:
    rules = tuple(
        r.model_copy(update={"require_approval": True}) if r.name == "pod-not-ready-rollback" else r
        for r in pack.rules
    )
    gated = pack.model_copy(update={"rules": rules})
    await journal_events(
        journal,
        [
            deploy_event(1, at=NOW - timedelta(days=1)),
            deploy_event(2, at=NOW - timedelta(minutes=8)),
        ],
    )
    await journal_alerts(journal, [alert(name="PodNotReady", fingerprint="gate",
                                         starts_at=(NOW - timedelta(minutes=5)).isoformat())])  # fmt: skip
    await DecisionEngine(journal=journal, pack=gated, facts=FakeFacts({}), dry_run=False,
                         clock=Clock(NOW)).run_once()  # fmt: skip
    [item] = (await journal.list_remediations()).items
    assert item["status"] == "awaiting_approval"

    runner = FakeRunner()
    ex = executor(journal, runner)
    await ex.run_until_idle()
    assert runner.calls == []  # nothing runs without approval

    assert await journal.approve_remediation(item["id"], by="tech-lead", at=NOW)
    assert not await journal.approve_remediation(item["id"], by="tech-lead", at=NOW)  # once
    await ex.run_until_idle()
    assert runner.calls[0] == (StepKind.ROLLOUT_UNDO, False)
    done = await journal.get_remediation(item["id"])
    assert done is not None
    assert (done["status"], done["approved_by"]) == ("succeeded", "tech-lead")
