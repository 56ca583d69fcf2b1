"""The executor's hops, timed on the injected clock over the real SQLite journal: from
the decision (or approval) to the first step, and from the first step to the end."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from remediator.domain.errors import PermanentError
from remediator.domain.plans import Step, StepKind
from remediator.domain.rules import RulePack
from remediator.domain.steps import VERIFICATION_KINDS
from remediator.journal.sqlite import SqliteJournal
from remediator.metrics import Metrics
from tests.unit.engine.test_decider import NOW, Clock
from tests.unit.engine.test_executor import (
    READ_ONLY,
    FakeLock,
    executor,
    journal,
    pack,
    planned_rollback,
)

__all__ = ["journal", "pack"]  # fixtures


class SlowRunner:
    """Each step takes 30 s on the test's clock; ``fail`` ends the plan there."""

    def __init__(self, clock: Clock, *, fail: StepKind | None = None) -> None:
        self.clock = clock
        self.fail = fail

    async def run(
        self, step: Step, *, service: str, dry_run: bool, context: dict[str, Any]
    ) -> dict[str, Any]:
        self.clock.now += timedelta(seconds=30)
        if step.kind is self.fail:
            raise PermanentError("rollout stuck")
        return {}

    def resumable(self, kind: StepKind) -> bool:
        return kind in READ_ONLY


def timed(metrics: Metrics) -> dict[str, Any]:
    """The hooks as the runtime wires them."""
    return {
        "on_first_action": metrics.action_latency.observe,
        "on_run_duration": lambda status, seconds: metrics.remediation_duration.labels(
            status=status
        ).observe(seconds),
        "on_verified": metrics.verification_latency.observe,
    }


async def test_first_action_and_run_duration_are_timed(
    journal: SqliteJournal, pack: RulePack
) -> None:
    await planned_rollback(journal, pack)  # decided at NOW
    clock = Clock(NOW + timedelta(seconds=90))  # the executor starts 90 s later
    metrics = Metrics()
    ex = executor(journal, SlowRunner(clock), lock=FakeLock(), clock=clock, **timed(metrics))
    await ex.run_until_idle()

    sample = metrics.registry.get_sample_value
    assert sample("remediator_action_latency_seconds_count") == 1
    assert sample("remediator_action_latency_seconds_sum") == 90
    # 30 s per step of the plan, from the first one's start.
    [listed] = (await journal.list_remediations(limit=10)).items
    item = await journal.get_remediation(listed.id)
    assert item is not None
    steps = len(item.plan().steps)
    duration = {"status": "succeeded"}
    assert sample("remediator_remediation_duration_seconds_count", duration) == 1
    assert sample("remediator_remediation_duration_seconds_sum", duration) == 30 * steps


async def test_a_failed_plan_is_timed_under_its_status(
    journal: SqliteJournal, pack: RulePack
) -> None:
    await planned_rollback(journal, pack)
    clock = Clock(NOW + timedelta(seconds=5))
    metrics = Metrics()
    runner = SlowRunner(clock, fail=StepKind.WAIT_ROLLOUT)
    ex = executor(journal, runner, lock=FakeLock(), clock=clock, **timed(metrics))
    await ex.run_until_idle()

    sample = metrics.registry.get_sample_value
    # Two steps, and the evidence gathered on the way to the end: 30 s each.
    assert sample("remediator_remediation_duration_seconds_sum", {"status": "failed"}) == 90
    assert sample("remediator_verification_latency_seconds_count") == 0  # never verified
    assert sample("remediator_remediation_duration_seconds_count", {"status": "succeeded"}) is None


async def test_dry_runs_are_not_timed(journal: SqliteJournal, pack: RulePack) -> None:
    await planned_rollback(journal, pack, dry_run=True)
    clock = Clock(NOW + timedelta(seconds=5))
    metrics = Metrics()
    ex = executor(journal, SlowRunner(clock), lock=FakeLock(), clock=clock, **timed(metrics))
    await ex.run_until_idle()

    assert (await journal.list_remediations()).items[0].finished_at is not None
    sample = metrics.registry.get_sample_value
    assert sample("remediator_action_latency_seconds_count") == 0
    assert sample("remediator_remediation_duration_seconds_count", {"status": "dry-run"}) is None


async def test_verified_is_when_the_last_verification_step_passed(
    journal: SqliteJournal, pack: RulePack
) -> None:
    await planned_rollback(journal, pack)
    clock = Clock(NOW + timedelta(seconds=5))
    metrics = Metrics()
    ex = executor(journal, SlowRunner(clock), lock=FakeLock(), clock=clock, **timed(metrics))
    await ex.run_until_idle()

    [listed] = (await journal.list_remediations(limit=10)).items
    item = await journal.get_remediation(listed.id)
    assert item is not None
    kinds = [step.kind for step in item.plan().steps]
    last_check = max(n for n, kind in enumerate(kinds) if kind in VERIFICATION_KINDS)
    sample = metrics.registry.get_sample_value
    assert sample("remediator_verification_latency_seconds_count") == 1
    # 30 s per step, up to and including the last check (steps after it, such as
    # record_evidence and notify, are not part of it).
    assert sample("remediator_verification_latency_seconds_sum") == 30 * (last_check + 1)
    assert last_check + 1 < len(kinds)
