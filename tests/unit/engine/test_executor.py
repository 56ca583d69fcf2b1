"""The executor over the real SQLite journal, with an in-memory StepRunner (our own port)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest

from remediator.domain.errors import PermanentError, TemporaryError
from remediator.domain.lifecycle import (
    IllegalTransition,
    Remediation,
    RemediationStatus,
    StepStatus,
)
from remediator.domain.plans import Step, StepKind
from remediator.domain.record_build import record_from_journal
from remediator.domain.rules import RulePack
from remediator.engine.decider import DecisionEngine
from remediator.engine.executor import Executor
from remediator.journal.sqlite import SqliteJournal
from remediator.ports import NeedsHuman
from remediator.rulefiles import load_rule_pack_from_path
from tests.polling import eventually
from tests.unit.engine.test_decider import (
    NOW,
    RULES,
    Clock,
    FakeFacts,
    deploy_event,
    journal_alerts,
    journal_events,
)
from tests.unit.journal_helpers import outbox_messages
from tests.unit.payloads import alert

READ_ONLY = {
    StepKind.WAIT_ROLLOUT,
    StepKind.VERIFY_HEALTH,
    StepKind.VERIFY_CONDITION,
    StepKind.RECORD_EVIDENCE,
    StepKind.NOTIFY,
}


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
        self.holding: list[str] = []

    async def acquire(self, *, service: str, namespace: str) -> bool:
        if self.free:
            self.holding.append(service)
        return self.free

    def held(self, *, service: str) -> bool:
        return service in self.holding

    async def release(self, *, service: str, namespace: str) -> None:
        self.holding.remove(service)


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
    assert item.status == ("dry-run" if dry_run else "planned")
    return str(item.id)


def executor(journal: SqliteJournal, runner: FakeRunner, **kwargs: Any) -> Executor:
    kwargs.setdefault("clock", Clock(NOW + timedelta(minutes=1)))
    kwargs.setdefault("instance_id", "test-1")
    return Executor(journal=journal, runner=runner, sleep=no_sleep,
                    outcome_channel="kafka:remediator.outcomes",
                    notice_channels=("slack",), **kwargs)  # fmt: skip


async def test_plan_runs_its_steps_in_order_once(journal: SqliteJournal, pack: RulePack) -> None:
    rid = await planned_rollback(journal, pack)
    runner = FakeRunner()
    lock = FakeLock()
    ex = executor(journal, runner, lock=lock)
    await ex.run_until_idle()
    assert [kind for kind, _ in runner.calls] == [
        StepKind.ROLLOUT_UNDO, StepKind.WAIT_ROLLOUT, StepKind.VERIFY_HEALTH, StepKind.VERIFY_CONDITION, StepKind.RECORD_EVIDENCE, StepKind.NOTIFY
    ]  # fmt: skip
    assert all(not dry for _, dry in runner.calls)
    item = await journal.get_remediation(rid)
    assert item is not None
    assert item.status == "succeeded" and item.finished_at
    assert [s.status for s in item.steps] == ["succeeded"] * 6
    assert item.steps[0].detail["kind"] == "rollout_undo"
    assert lock.holding == []
    # Nothing runs twice: a second pass finds nothing to do.
    await ex.run_until_idle()
    assert len(runner.calls) == 6
    events = [p.message.payload["type"] for p in
              await outbox_messages(journal, "kafka:remediator.outcomes", limit=50)]  # fmt: skip
    assert events == [
        "io.remediator.remediation.started",
        "dev.cdevents.incident.detected.0.2.0",
        "io.remediator.remediation.succeeded",
        "dev.cdevents.service.rolledback.0.2.0",
        "dev.cdevents.incident.resolved.0.2.0",
    ]
    notices = [p.message.id for p in await outbox_messages(journal, "slack", limit=50)]
    assert notices == [f"slack:{rid}:started", f"slack:{rid}:succeeded"]


async def test_permanent_failure_stops_the_plan(journal: SqliteJournal, pack: RulePack) -> None:
    rid = await planned_rollback(journal, pack)
    runner = FakeRunner(
        failures={StepKind.WAIT_ROLLOUT: [PermanentError("progress deadline exceeded")]}
    )
    await executor(journal, runner).run_until_idle()
    # Nothing after the failed step runs but the read-only evidence, kept with that step.
    assert [kind for kind, _ in runner.calls] == [
        StepKind.ROLLOUT_UNDO, StepKind.WAIT_ROLLOUT, StepKind.RECORD_EVIDENCE
    ]  # fmt: skip
    item = await journal.get_remediation(rid)
    assert item is not None
    assert item.status == "failed"
    assert "progress deadline exceeded" in item.reason
    assert [s.status for s in item.steps] == ["succeeded", "failed"]
    assert item.steps[1].detail["evidence"]["kind"] == "record_evidence"


async def test_temporary_failures_are_retried(journal: SqliteJournal, pack: RulePack) -> None:
    rid = await planned_rollback(journal, pack)
    runner = FakeRunner(failures={StepKind.ROLLOUT_UNDO: [TemporaryError("apiserver busy")] * 2})
    await executor(journal, runner).run_until_idle()
    item = await journal.get_remediation(rid)
    assert item is not None and item.status == "succeeded"
    assert [k for k, _ in runner.calls].count(StepKind.ROLLOUT_UNDO) == 3


async def test_needs_human(journal: SqliteJournal, pack: RulePack) -> None:
    rid = await planned_rollback(journal, pack)
    runner = FakeRunner(failures={StepKind.ROLLOUT_UNDO: [NeedsHuman("deployment is paused")]})
    await executor(journal, runner).run_until_idle()
    item = await journal.get_remediation(rid)
    assert item is not None
    assert (item.status, item.reason) == ("needs_human", "rollout_undo: deployment is paused")


async def test_a_failed_verification_ends_needs_human_with_its_evidence(
    journal: SqliteJournal, pack: RulePack
) -> None:
    rid = await planned_rollback(journal, pack)
    seen = {"check": "condition", "result": "failed", "series": [{"service": "checkout"}]}
    failure = NeedsHuman("the triggering condition has not cleared", detail=seen)
    runner = FakeRunner(failures={StepKind.VERIFY_CONDITION: [failure]})
    await executor(journal, runner).run_until_idle()
    assert [kind for kind, _ in runner.calls] == [
        StepKind.ROLLOUT_UNDO, StepKind.WAIT_ROLLOUT, StepKind.VERIFY_HEALTH,
        StepKind.VERIFY_CONDITION, StepKind.RECORD_EVIDENCE,
    ]  # fmt: skip
    item = await journal.get_remediation(rid)
    assert item is not None
    assert item.status == "needs_human"
    assert item.reason == "verify_condition: the triggering condition has not cleared"
    # The evidence is journaled with the failed step, not as a step of its own: the
    # timeline still ends at the failure, so recovery never resumes past it.
    failed = item.steps[-1]
    assert (failed.kind, failed.status) == ("verify_condition", "failed")
    assert {k: failed.detail[k] for k in seen} == seen
    assert failed.detail["evidence"] == {
        "kind": "record_evidence", "dry_run": False, "service": "checkout"
    }  # fmt: skip
    notices = [p.message.id for p in await outbox_messages(journal, "slack")]
    assert notices == [f"slack:{rid}:started", f"slack:{rid}:needs_human"]


class EvidenceRunner(FakeRunner):
    """Gathers evidence as the Kubernetes runner does (events, pods, failed requests)."""

    EVENT: ClassVar[dict[str, Any]] = {
        "at": "2026-11-27T09:58:00+00:00", "kind": "Pod", "name": "checkout-7f9-abc",
        "type": "Warning", "reason": "BackOff", "message": "restarting", "count": 4,
    }  # fmt: skip

    async def run(
        self, step: Step, *, service: str, dry_run: bool, context: dict[str, Any]
    ) -> dict[str, Any]:
        done = await super().run(step, service=service, dry_run=dry_run, context=context)
        if step.kind is not StepKind.RECORD_EVIDENCE:
            return done
        return {"summary": "evidence recorded", "events": [self.EVENT],
                "pods_affected": ["checkout-7f9-abc"], "failed_requests": "42"}  # fmt: skip


async def test_the_record_of_a_failed_verification_shows_its_evidence(
    journal: SqliteJournal, pack: RulePack
) -> None:
    rid = await planned_rollback(journal, pack)
    runner = EvidenceRunner(failures={StepKind.VERIFY_HEALTH: [NeedsHuman("HTTP 500")]})
    await executor(journal, runner).run_until_idle()
    item = await journal.get_remediation(rid)
    assert item is not None and item.status == "needs_human"
    record = record_from_journal(item, await journal.get_signal(item.signal_id))
    assert record.evidence.note == "recorded when step 3 (verify_health) failed"
    assert [(e.name, e.reason) for e in record.evidence.events] == [("checkout-7f9-abc", "BackOff")]
    assert record.impact.pods_affected == ("checkout-7f9-abc",)
    assert record.impact.failed_requests == "42"
    assert record.results.health.status.value == "failed"


async def test_evidence_that_cannot_be_read_never_hides_why_the_plan_stopped(
    journal: SqliteJournal, pack: RulePack
) -> None:
    rid = await planned_rollback(journal, pack)
    runner = FakeRunner(
        failures={
            StepKind.VERIFY_HEALTH: [NeedsHuman("health check failed: HTTP 500")],
            StepKind.RECORD_EVIDENCE: [TemporaryError("apiserver unavailable", delay=1)],
        }
    )
    await executor(journal, runner).run_until_idle()
    item = await journal.get_remediation(rid)
    assert item is not None
    assert (item.status, item.reason) == (
        "needs_human", "verify_health: health check failed: HTTP 500"
    )  # fmt: skip
    evidence = item.steps[-1].detail["evidence"]
    assert evidence == {"error": "evidence could not be recorded: apiserver unavailable"}
    assert [k for k, _ in runner.calls].count(StepKind.RECORD_EVIDENCE) == 1  # never retried
    record = record_from_journal(item, None)
    assert record.evidence.note == (
        "recorded when step 3 (verify_health) failed; "
        "evidence could not be recorded: apiserver unavailable"
    )


async def test_a_crash_after_a_failed_verification_does_not_resume_past_it(
    journal: SqliteJournal, pack: RulePack
) -> None:
    rid = await planned_rollback(journal, pack)
    runner = FakeRunner(failures={StepKind.VERIFY_HEALTH: [NeedsHuman("HTTP 500")]})
    await executor(journal, runner).run_until_idle()
    restarted = FakeRunner()
    ex = executor(journal, restarted)
    await ex.recover()
    await asyncio.gather(*list(ex._tasks))
    assert restarted.calls == []
    item = await journal.get_remediation(rid)
    assert item is not None and item.status == "needs_human"


async def test_dry_run_rehearses_every_step_and_keeps_its_status(
    journal: SqliteJournal, pack: RulePack
) -> None:
    rid = await planned_rollback(journal, pack, dry_run=True)
    runner = FakeRunner()
    await executor(journal, runner).run_until_idle()
    assert len(runner.calls) == 6 and all(dry for _, dry in runner.calls)
    item = await journal.get_remediation(rid)
    assert item is not None
    assert item.status == "dry-run" and item.finished_at
    assert len(item.steps) == 6


async def test_two_executors_racing_run_a_plan_once(journal: SqliteJournal, pack: RulePack) -> None:
    await planned_rollback(journal, pack)
    runners = [FakeRunner(), FakeRunner()]
    executors = [executor(journal, r) for r in runners]
    await asyncio.gather(*(e.run_until_idle() for e in executors))
    assert sorted(len(r.calls) for r in runners) == [0, 6]


async def test_lock_held_elsewhere_leaves_the_plan_for_later(
    journal: SqliteJournal, pack: RulePack
) -> None:
    rid = await planned_rollback(journal, pack)
    runner = FakeRunner()
    ex = executor(journal, runner, lock=FakeLock(free=False))
    await ex.start_runnable()
    await asyncio.gather(*list(ex._tasks))
    item = await journal.get_remediation(rid)
    assert item is not None and (item.status, item.claimed_at) == ("planned", None)
    assert runner.calls == []


async def crash_during(
    journal: SqliteJournal, rid: str, *, finished: int, in_flight: StepKind | None
) -> None:
    """Leave the journal as a SIGKILL would: claimed, some steps done, one maybe started."""
    at = NOW + timedelta(minutes=1)
    old = "old-instance"  # it never beat a heartbeat: gone, as far as anyone can tell
    assert await journal.claim_remediation(rid, by=old, at=at, to=RemediationStatus.RUNNING)
    item = await journal.get_remediation(rid)
    assert item is not None
    kinds = [step.kind.value for step in item.plan().steps]
    for idx in range(finished):
        await journal.step_started(rid, holder=old, idx=idx, kind=kinds[idx], at=at)
        await journal.step_finished(
            rid, holder=old, idx=idx, status=StepStatus.SUCCEEDED, detail={}, at=at
        )
    if in_flight is not None:
        assert kinds[finished] == in_flight.value
        await journal.step_started(rid, holder=old, idx=finished, kind=in_flight.value, at=at)


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
    assert item.status == "needs_human"
    assert "whether it took effect is unknown" in item.reason


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
        StepKind.VERIFY_CONDITION,
        StepKind.RECORD_EVIDENCE,
        StepKind.NOTIFY,
    ]
    item = await journal.get_remediation(rid)
    assert item is not None and item.status == "succeeded"


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
    assert item is not None and item.status == "succeeded"


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
    assert (item.status, item.finished_at) == ("running", None)
    assert [(s.kind, s.status) for s in item.steps] == [
        ("rollout_undo", "succeeded"), ("wait_rollout", "succeeded")
    ]  # fmt: skip

    restarted = FakeRunner()
    ex2 = executor(journal, restarted)
    await ex2.recover()
    await asyncio.gather(*list(ex2._tasks))
    assert [k for k, _ in restarted.calls] == [
        StepKind.VERIFY_HEALTH,
        StepKind.VERIFY_CONDITION,
        StepKind.RECORD_EVIDENCE,
        StepKind.NOTIFY,
    ]
    item = await journal.get_remediation(rid)
    assert item is not None and item.status == "succeeded"


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
    assert item.status == "failed"
    assert item.reason == "cannot take the lock of checkout: namespace shop not found"


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
    assert item.status == "awaiting_approval"

    runner = FakeRunner()
    ex = executor(journal, runner)
    await ex.run_until_idle()
    assert runner.calls == []  # nothing runs without approval

    assert await journal.approve_remediation(item.id, by="tech-lead", at=NOW)
    assert not await journal.approve_remediation(item.id, by="tech-lead", at=NOW)  # once
    await ex.run_until_idle()
    assert runner.calls[0] == (StepKind.ROLLOUT_UNDO, False)
    done = await journal.get_remediation(item.id)
    assert done is not None
    assert (done.status, done.approved_by) == ("succeeded", "tech-lead")


# -- every plan ends ---------------------------------------------------------------
class ExplodingRunner(FakeRunner):
    """A runner with a bug: one step raises something no step is supposed to raise."""

    def __init__(self, kind: StepKind, error: Exception) -> None:
        super().__init__()
        self.kind, self.error = kind, error

    async def run(
        self, step: Step, *, service: str, dry_run: bool, context: dict[str, Any]
    ) -> dict[str, Any]:
        await super().run(step, service=service, dry_run=dry_run, context=context)
        if step.kind is self.kind:
            raise self.error
        return {"kind": step.kind.value}


class FlakyJournal(SqliteJournal):
    """The real journal, refusing the writes ``refuse`` picks for now (TemporaryError)."""

    def __init__(self, *, path: Path, refuse: Callable[[str, dict[str, Any]], bool]) -> None:
        super().__init__(path=path)
        self.refuse = refuse
        self.refused: list[str] = []

    def _gate(self, name: str, kwargs: dict[str, Any]) -> None:
        if self.refuse(name, kwargs):
            self.refused.append(name)
            raise TemporaryError(f"{name}: database is locked", delay=0.1)

    async def step_started(self, remediation_id: str, **kwargs: Any) -> None:
        self._gate("step_started", kwargs)
        await super().step_started(remediation_id, **kwargs)

    async def finish_remediation(self, remediation_id: str, **kwargs: Any) -> None:
        self._gate("finish_remediation", kwargs)
        await super().finish_remediation(remediation_id, **kwargs)


def refuse_times(name: str, times: int, **match: Any) -> Callable[[str, dict[str, Any]], bool]:
    left = [times]

    def refuse(called: str, kwargs: dict[str, Any]) -> bool:
        if called != name or any(kwargs.get(k) != v for k, v in match.items()) or not left[0]:
            return False
        left[0] -= 1
        return True

    return refuse


class Hooks:
    def __init__(self) -> None:
        self.finished: list[tuple[str, str]] = []
        self.internal_errors: list[str] = []
        self.lock_attempts: list[str] = []
        self.leases_lost: list[str] = []

    def kwargs(self) -> dict[str, Any]:
        return {
            "on_finished": lambda action, status: self.finished.append((action, status)),
            "on_internal_error": self.internal_errors.append,
            "on_lock_attempt": self.lock_attempts.append,
            "on_lease_lost": self.leases_lost.append,
        }


async def test_an_unexpected_error_in_a_step_fails_the_plan_and_frees_the_service(
    journal: SqliteJournal, pack: RulePack
) -> None:
    rid = await planned_rollback(journal, pack)
    runner = ExplodingRunner(StepKind.WAIT_ROLLOUT, KeyError("availableReplicas"))
    lock, hooks = FakeLock(), Hooks()
    ex = executor(journal, runner, lock=lock, **hooks.kwargs())
    await ex.run_until_idle()

    assert [kind for kind, _ in runner.calls] == [StepKind.ROLLOUT_UNDO, StepKind.WAIT_ROLLOUT]
    item = await journal.get_remediation(rid)
    assert item is not None
    assert (item.status, item.reason) == (
        "failed", "wait_rollout: internal error: KeyError: 'availableReplicas'"
    )  # fmt: skip
    assert item.finished_at
    assert [(s.status, s.detail.get("type")) for s in item.steps] == [
        ("succeeded", None), ("failed", "KeyError")
    ]  # fmt: skip
    assert hooks.internal_errors == ["executor"]
    assert hooks.finished == [("rollback", "failed")]
    assert lock.holding == []
    assert ex._busy == set()  # the lane is free: the next plan of checkout may start
    events = [p.message.payload["type"] for p in
              await outbox_messages(journal, "kafka:remediator.outcomes", limit=50)]  # fmt: skip
    assert events == [
        "io.remediator.remediation.started",
        "dev.cdevents.incident.detected.0.2.0",  # the incident stays open: nothing resolved it
        "io.remediator.remediation.failed",
    ]
    notices = [p.message.id for p in await outbox_messages(journal, "slack", limit=50)]
    assert notices == [f"slack:{rid}:started", f"slack:{rid}:failed"]


class CorruptPlans(SqliteJournal):
    """Hands out plans whose steps no longer parse (a decision from a newer version)."""

    async def runnable_remediations(self, *, limit: int) -> list[Remediation]:
        items = await super().runnable_remediations(limit=limit)
        teleport = {"steps": [{"kind": "teleport"}]}
        return [item.model_copy(update={"decision": teleport}) for item in items]


async def test_a_plan_that_does_not_parse_fails_instead_of_running_forever(
    tmp_path: Path, pack: RulePack
) -> None:
    journal = CorruptPlans(path=tmp_path / "journal.db")
    await journal.open()
    try:
        rid = await planned_rollback(journal, pack)
        runner, hooks = FakeRunner(), Hooks()
        await executor(journal, runner, lock=FakeLock(), **hooks.kwargs()).run_until_idle()
        assert runner.calls == []
        item = await journal.get_remediation(rid)
        assert item is not None
        assert item.status == "failed"
        assert item.reason.startswith("internal error: ValidationError: ")
        assert "\n" not in item.reason and len(item.reason) < 300
        assert item.steps == ()
        assert hooks.internal_errors == ["executor"]
        assert hooks.finished == [("rollback", "failed")]
    finally:
        await journal.close()


async def test_an_unexpected_error_taking_the_lock_fails_the_plan(
    journal: SqliteJournal, pack: RulePack
) -> None:
    class BuggyLock(FakeLock):
        async def acquire(self, *, service: str, namespace: str) -> bool:
            raise RuntimeError("lease cache corrupted")

    rid = await planned_rollback(journal, pack)
    runner, hooks = FakeRunner(), Hooks()
    await executor(journal, runner, lock=BuggyLock(), **hooks.kwargs()).run_until_idle()
    assert runner.calls == []
    item = await journal.get_remediation(rid)
    assert item is not None
    assert (item.status, item.reason) == (
        "failed", "internal error: RuntimeError: lease cache corrupted"
    )  # fmt: skip
    assert hooks.internal_errors == ["executor"]


async def drive(ex: Executor, clock: Clock, *, seconds: float, tick: float = 0.5) -> None:
    """What the executor's polling loop does, one pass per ``tick`` of a fake clock."""
    for _ in range(round(seconds / tick)):
        await ex.start_runnable()
        await asyncio.gather(*list(ex._tasks))
        clock.now += timedelta(seconds=tick)


async def test_an_ending_the_journal_refuses_is_written_on_a_later_pass(
    tmp_path: Path, pack: RulePack
) -> None:
    journal = FlakyJournal(path=tmp_path / "journal.db",
                           refuse=refuse_times("finish_remediation", 2))  # fmt: skip
    await journal.open()
    try:
        rid = await planned_rollback(journal, pack)
        clock = Clock(NOW + timedelta(minutes=1))
        runner = ExplodingRunner(StepKind.ROLLOUT_UNDO, RuntimeError("boom"))
        lock, hooks = FakeLock(), Hooks()
        ex = executor(journal, runner, lock=lock, clock=clock, rand=lambda: 1.0,
                      **hooks.kwargs())  # fmt: skip
        await ex.start_runnable()
        await asyncio.gather(*list(ex._tasks))
        item = await journal.get_remediation(rid)
        assert item is not None and (item.status, item.finished_at) == ("running", None)
        assert "checkout" in ex._busy  # still running as far as anyone can tell
        assert lock.holding == []  # but the Lease is not kept meanwhile

        await drive(ex, clock, seconds=1.5)  # within the first backoff (2 s): no write
        assert journal.refused == ["finish_remediation"]
        await drive(ex, clock, seconds=10)  # refused once more, then written
        assert journal.refused == ["finish_remediation"] * 2
        item = await journal.get_remediation(rid)
        assert item is not None
        assert (item.status, item.reason) == (
            "failed", "rollout_undo: internal error: RuntimeError: boom"
        )  # fmt: skip
        assert [s.status for s in item.steps] == ["failed"]
        assert hooks.finished == [("rollback", "failed")]
        assert ex._busy == set()
        assert len(runner.calls) == 1  # nothing ran again
    finally:
        await journal.close()


async def test_a_journal_fault_mid_plan_is_settled_as_a_restart_would(
    tmp_path: Path, pack: RulePack
) -> None:
    journal = FlakyJournal(path=tmp_path / "journal.db",
                           refuse=refuse_times("step_started", 1, idx=1))  # fmt: skip
    await journal.open()
    try:
        rid = await planned_rollback(journal, pack)
        clock = Clock(NOW + timedelta(minutes=1))
        runner, hooks = FakeRunner(), Hooks()
        ex = executor(journal, runner, lock=FakeLock(), clock=clock, rand=lambda: 1.0,
                      **hooks.kwargs())  # fmt: skip
        await drive(ex, clock, seconds=5)
        assert journal.refused == ["step_started"]
        # The undo ran once; the plan went on after its last finished step.
        assert [k for k, _ in runner.calls] == [
            StepKind.ROLLOUT_UNDO, StepKind.WAIT_ROLLOUT, StepKind.VERIFY_HEALTH, StepKind.VERIFY_CONDITION, StepKind.RECORD_EVIDENCE, StepKind.NOTIFY
        ]  # fmt: skip
        item = await journal.get_remediation(rid)
        assert item is not None and item.status == "succeeded"
        assert hooks.internal_errors == []  # a refused write is no bug
        assert hooks.finished == [("rollback", "succeeded")]
    finally:
        await journal.close()


# -- a lock held elsewhere -----------------------------------------------------------
class HeldElsewhere(FakeLock):
    """Another replica holds every Lease until ``free`` is set; attempts are timed."""

    def __init__(self, clock: Clock, *, error: Exception | None = None) -> None:
        super().__init__(free=False)
        self.clock = clock
        self.error = error
        self.attempts: list[datetime] = []

    async def acquire(self, *, service: str, namespace: str) -> bool:
        self.attempts.append(self.clock())
        if self.error is not None and not self.free:
            raise self.error
        return await super().acquire(service=service, namespace=namespace)

    def gaps(self) -> list[float]:
        return [(b - a).total_seconds() for a, b in itertools.pairwise(self.attempts)]


def lock_lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == level and "cannot take the lock" in r.getMessage()]  # fmt: skip


async def test_a_lock_held_elsewhere_is_retried_with_capped_exponential_backoff(
    journal: SqliteJournal, pack: RulePack, caplog: pytest.LogCaptureFixture
) -> None:
    rid = await planned_rollback(journal, pack)
    clock = Clock(NOW + timedelta(minutes=1))
    lock, runner, hooks = HeldElsewhere(clock), FakeRunner(), Hooks()
    ex = executor(journal, runner, lock=lock, clock=clock, rand=lambda: 1.0,
                  lock_retry_base_seconds=2, lock_retry_max_seconds=60,
                  **hooks.kwargs())  # fmt: skip
    with caplog.at_level(logging.DEBUG, logger="remediator.engine.executor"):
        await drive(ex, clock, seconds=300)  # 600 passes of the polling loop

    # One attempt per backoff period: the waits double from 2 s and stop at 60 s.
    assert lock.gaps() == [2, 4, 8, 16, 32, 60, 60, 60]
    assert hooks.lock_attempts == ["held_elsewhere"] * 9
    assert len(lock_lines(caplog, logging.INFO)) == 1  # one line per wait, not per attempt
    item = await journal.get_remediation(rid)
    assert item is not None and (item.status, item.claimed_at) == ("planned", None)
    assert runner.calls == []

    lock.free = True  # the other replica is done
    await drive(ex, clock, seconds=61)
    assert hooks.lock_attempts[-1] == "acquired" and len(lock.attempts) == 10
    assert len(runner.calls) == 6  # the plan ran, once
    item = await journal.get_remediation(rid)
    assert item is not None and item.status == "succeeded"


async def test_lock_retries_are_jittered_within_the_backoff_bound(
    journal: SqliteJournal, pack: RulePack
) -> None:
    await planned_rollback(journal, pack)
    clock = Clock(NOW + timedelta(minutes=1))
    lock = HeldElsewhere(clock)
    ex = executor(journal, FakeRunner(), lock=lock, clock=clock, rand=random.Random(7).random,
                  lock_retry_base_seconds=2, lock_retry_max_seconds=60)  # fmt: skip
    tick = 0.5
    await drive(ex, clock, seconds=600, tick=tick)
    gaps = lock.gaps()
    bounds = [min(60.0, 2.0 * 2**n) for n in range(len(gaps))]
    # At least half the period; a pass sees a wait end at most one tick late.
    assert all(bound / 2 <= gap <= bound + tick for gap, bound in zip(gaps, bounds, strict=True))
    assert len(set(gaps)) > 3  # jittered, not a fixed schedule
    assert len(lock.attempts) >= 600 / 60  # and it keeps asking, at least once a cap


async def test_jitter_scales_each_wait(journal: SqliteJournal, pack: RulePack) -> None:
    await planned_rollback(journal, pack)
    clock = Clock(NOW + timedelta(minutes=1))
    lock = HeldElsewhere(clock)
    draws = iter([0.0, 0.75, 0.5, 1.0])
    ex = executor(journal, FakeRunner(), lock=lock, clock=clock, rand=lambda: next(draws),
                  lock_retry_base_seconds=2, lock_retry_max_seconds=60)  # fmt: skip
    await drive(ex, clock, seconds=15)
    assert lock.gaps() == [1 + 0.0 * 1, 2 + 0.75 * 2, 4 + 0.5 * 4, 8 + 1.0 * 8][:3]


async def test_an_error_taking_the_lock_backs_off_too(
    journal: SqliteJournal, pack: RulePack, caplog: pytest.LogCaptureFixture
) -> None:
    await planned_rollback(journal, pack)
    clock = Clock(NOW + timedelta(minutes=1))
    lock = HeldElsewhere(clock, error=TemporaryError("apiserver: 503"))
    hooks = Hooks()
    ex = executor(journal, FakeRunner(), lock=lock, clock=clock, rand=lambda: 1.0,
                  **hooks.kwargs())  # fmt: skip
    with caplog.at_level(logging.DEBUG, logger="remediator.engine.executor"):
        await drive(ex, clock, seconds=31)
    assert lock.gaps() == [2, 4, 8, 16]
    assert hooks.lock_attempts == ["error"] * 5
    assert len(lock_lines(caplog, logging.WARNING)) == 1
    assert hooks.internal_errors == []


# -- a lock lost mid-plan ---------------------------------------------------------------
class StolenLock(FakeLock):
    """Another replica takes the Lease over while ``steal_during`` runs."""

    def __init__(self) -> None:
        super().__init__()
        self.stolen: set[str] = set()
        self.released: list[str] = []

    def held(self, *, service: str) -> bool:
        return super().held(service=service) and service not in self.stolen

    async def release(self, *, service: str, namespace: str) -> None:
        self.released.append(service)  # forgets it here; the new holder keeps its Lease
        await super().release(service=service, namespace=namespace)


class StealingRunner(FakeRunner):
    def __init__(self, lock: StolenLock, steal_during: StepKind) -> None:
        super().__init__()
        self.lock, self.steal_during = lock, steal_during

    async def run(
        self, step: Step, *, service: str, dry_run: bool, context: dict[str, Any]
    ) -> dict[str, Any]:
        if step.kind is self.steal_during:
            self.lock.stolen.add(service)
        return await super().run(step, service=service, dry_run=dry_run, context=context)


async def test_a_lost_lease_stops_the_plan_before_its_next_step(
    journal: SqliteJournal, pack: RulePack
) -> None:
    rid = await planned_rollback(journal, pack)
    lock, hooks = StolenLock(), Hooks()
    runner = StealingRunner(lock, steal_during=StepKind.ROLLOUT_UNDO)
    await executor(journal, runner, lock=lock, **hooks.kwargs()).run_until_idle()

    assert [k for k, _ in runner.calls] == [StepKind.ROLLOUT_UNDO]  # nothing after it ran
    item = await journal.get_remediation(rid)
    assert item is not None
    assert item.status == "needs_human"
    assert item.reason.startswith(
        "the lock (Lease) of checkout was lost before step 2 of 6 (wait_rollout)"
    )
    assert [(s.kind, s.status) for s in item.steps] == [("rollout_undo", "succeeded")]
    assert hooks.leases_lost == ["checkout"]
    assert hooks.finished == [("rollback", "needs_human")]
    assert hooks.internal_errors == []
    assert lock.released == ["checkout"]
    notices = [p.message.id for p in await outbox_messages(journal, "slack", limit=50)]
    assert notices == [f"slack:{rid}:started", f"slack:{rid}:needs_human"]


async def test_a_lock_that_cannot_be_released_does_not_block_the_service(
    journal: SqliteJournal, pack: RulePack
) -> None:
    class Unreleasable(FakeLock):
        async def release(self, *, service: str, namespace: str) -> None:
            raise TemporaryError("apiserver: 503")

    rid = await planned_rollback(journal, pack)
    ex = executor(journal, FakeRunner(), lock=Unreleasable())
    await ex.run_until_idle()
    item = await journal.get_remediation(rid)
    assert item is not None and item.status == "succeeded"
    assert ex._busy == set()


async def test_a_broken_pass_is_counted_and_the_loop_goes_on(
    tmp_path: Path, pack: RulePack
) -> None:
    class OnceBroken(SqliteJournal):
        broken = True

        async def runnable_remediations(self, *, limit: int) -> list[Remediation]:
            if self.broken:
                self.broken = False
                raise RuntimeError("cannot decode row")
            return await super().runnable_remediations(limit=limit)

    journal = OnceBroken(path=tmp_path / "journal.db")
    await journal.open()
    try:
        rid = await planned_rollback(journal, pack)
        hooks = Hooks()
        ex = executor(journal, FakeRunner(), **hooks.kwargs())
        running = asyncio.create_task(ex.run())
        try:
            await eventually(lambda: journal.get_remediation(rid),
                             lambda item: bool(item and item.status == "succeeded"),
                             timeout=10, what="the plan to succeed", interval=0.05)  # fmt: skip
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
        assert hooks.internal_errors == ["executor"]
    finally:
        await journal.close()


async def test_a_plan_resumed_after_a_restart_waits_for_a_held_lock(
    journal: SqliteJournal, pack: RulePack
) -> None:
    rid = await planned_rollback(journal, pack)
    await crash_during(journal, rid, finished=1, in_flight=None)
    clock = Clock(NOW + timedelta(minutes=1))
    lock, runner, hooks = HeldElsewhere(clock), FakeRunner(), Hooks()
    ex = executor(journal, runner, lock=lock, clock=clock, rand=lambda: 1.0, **hooks.kwargs())
    await ex.recover()
    await asyncio.gather(*list(ex._tasks))
    await drive(ex, clock, seconds=14.5)
    assert lock.gaps() == [2, 4, 8]  # the same backoff as a fresh plan's
    assert runner.calls == []
    assert "checkout" in ex._busy  # still its plan's: no other may start meanwhile

    lock.free = True
    await drive(ex, clock, seconds=16.5)
    assert [k for k, _ in runner.calls] == [
        StepKind.WAIT_ROLLOUT, StepKind.VERIFY_HEALTH, StepKind.VERIFY_CONDITION, StepKind.RECORD_EVIDENCE, StepKind.NOTIFY
    ]  # fmt: skip
    item = await journal.get_remediation(rid)
    assert item is not None and item.status == "succeeded"
    assert hooks.lock_attempts == ["held_elsewhere"] * 4 + ["acquired"]


async def test_a_resumed_plan_whose_lock_can_never_be_taken_fails(
    journal: SqliteJournal, pack: RulePack
) -> None:
    rid = await planned_rollback(journal, pack)
    await crash_during(journal, rid, finished=1, in_flight=None)
    ex = executor(journal, FakeRunner(), lock=BrokenLock())
    await ex.recover()
    await asyncio.gather(*list(ex._tasks))
    item = await journal.get_remediation(rid)
    assert item is not None
    assert item.status == "failed"
    assert item.reason == "cannot take the lock of checkout: namespace shop not found"
    assert ex._busy == set()


class RefusingEnds(SqliteJournal):
    """A journal whose lifecycle refuses every end (as a bug in a transition would)."""

    async def finish_remediation(
        self, remediation_id: str, *, status: RemediationStatus, **kwargs: Any
    ) -> None:
        raise IllegalTransition(remediation_id, RemediationStatus.RUNNING, status)


async def test_an_end_the_lifecycle_refuses_is_given_up_not_retried_forever(
    tmp_path: Path, pack: RulePack
) -> None:
    journal = RefusingEnds(path=tmp_path / "journal.db", instance="test-1")
    await journal.open()
    try:
        rid = await planned_rollback(journal, pack)
        clock = Clock(NOW + timedelta(minutes=1))
        runner, hooks = FakeRunner(), Hooks()
        ex = executor(journal, runner, clock=clock, lock=FakeLock(), **hooks.kwargs())
        for _ in range(3):  # recovery is due on the first pass and again 30 s later
            await ex.run_pass()
            await asyncio.gather(*list(ex._tasks))
            clock.now += timedelta(seconds=15)
        assert len(runner.calls) == 6  # the plan ran once; its end was never retried
        assert hooks.internal_errors == ["executor"]  # counted once
        assert ex._busy == set()  # the service is free for its next plan
        item = await journal.get_remediation(rid)
        assert item is not None and (item.status, item.finished_at) == ("running", None)
    finally:
        await journal.close()


class RolloutHeld(FakeRunner):
    """Holds the first plan's rollout wait until released; records which services changed
    something, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting: str | None = None
        self.release = asyncio.Event()
        self.acted: list[str] = []

    async def run(
        self, step: Step, *, service: str, dry_run: bool, context: dict[str, Any]
    ) -> dict[str, Any]:
        if step.kind not in READ_ONLY and service not in self.acted:
            self.acted.append(service)  # its first change
        if step.kind is StepKind.WAIT_ROLLOUT and self.waiting in (None, service):
            self.waiting = service
            await self.release.wait()
        return await super().run(step, service=service, dry_run=dry_run, context=context)


async def test_a_plan_waiting_for_its_rollout_lets_another_service_act(
    journal: SqliteJournal, pack: RulePack
) -> None:
    """The cap on plans at once counts plans changing things: one that waits for its
    rollout (or verifies) gives its turn up, so another service's rollback need not
    queue behind minutes of checks."""
    for service, namespace in (("checkout", "shop"), ("payments", "payments")):
        await journal_events(journal, [
            {**deploy_event(n, at=at, service=service),
             "data": {**deploy_event(n, at=at, service=service)["data"], "namespace": namespace}}
            for n, at in ((1, NOW - timedelta(days=1)), (2, NOW - timedelta(minutes=8)))
        ])  # fmt: skip
        await journal_alerts(journal, [alert(name="PodNotReady", service=service,
                                             namespace=namespace, fingerprint=f"pnr-{service}",
                                             starts_at=(NOW - timedelta(minutes=5)).isoformat())])  # fmt: skip
    engine = DecisionEngine(journal=journal, pack=pack, facts=FakeFacts({}), dry_run=False,
                            clock=Clock(NOW))  # fmt: skip
    await engine.run_once()
    assert [i.status for i in (await journal.list_remediations()).items] == ["planned"] * 2
    runner = RolloutHeld()
    ex = executor(journal, runner, lock=FakeLock(), max_concurrency=1)
    running = asyncio.create_task(ex.run_until_idle())
    try:
        await eventually(lambda: asyncio.sleep(0, runner.acted), lambda acted: len(acted) == 2,
                         timeout=10, interval=0.01, what="both services acted")  # fmt: skip
        assert runner.waiting == runner.acted[0]  # the first still waits for its rollout
        runner.release.set()
        await asyncio.wait_for(running, timeout=10)
    finally:
        runner.release.set()
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    statuses = [i.status for i in (await journal.list_remediations()).items]
    assert statuses == ["succeeded", "succeeded"]
