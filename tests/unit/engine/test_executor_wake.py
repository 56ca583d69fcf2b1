"""A decided plan reaches the executor at once: the decider wakes it (as the runtime
wires them), instead of the plan waiting for the executor's next poll.

The executor's poll is set to an hour and its clock never moves: a plan claimed within
the test's bounded wait was claimed because of the wake, never because a poll came due.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import pytest

from remediator.domain.lifecycle import Remediation, RemediationStatus
from remediator.domain.rules import RulePack
from remediator.engine.decider import DecisionEngine
from remediator.engine.executor import Executor
from remediator.journal.sqlite import SqliteJournal
from remediator.runtime import Runtime
from remediator.settings import load_settings
from tests.polling import eventually
from tests.unit.engine.test_decider import (
    NOW,
    Clock,
    FakeFacts,
    deploy_event,
    journal_alerts,
    journal_events,
)
from tests.unit.engine.test_executor import FakeLock, FakeRunner, journal, no_sleep, pack
from tests.unit.payloads import alert

__all__ = ["journal", "pack"]  # fixtures

AN_HOUR = 3600.0


@contextlib.asynccontextmanager
async def running(*roots: asyncio.Task[None]) -> AsyncIterator[None]:
    try:
        yield
    finally:
        for root in roots:
            root.cancel()
        for root in roots:
            with contextlib.suppress(asyncio.CancelledError):
                await root


def remediations(journal: SqliteJournal) -> Callable[[], Awaitable[list[Remediation]]]:
    async def read() -> list[Remediation]:
        return list((await journal.list_remediations()).items)

    return read


@pytest.mark.parametrize("dry_run", [False, True], ids=["plan", "dry-run"])
async def test_a_decided_plan_is_claimed_without_waiting_for_the_poll(
    journal: SqliteJournal, pack: RulePack, dry_run: bool
) -> None:
    await journal_events(journal, [deploy_event(1, at=NOW - timedelta(days=1)),
                                   deploy_event(2, at=NOW - timedelta(minutes=8))])  # fmt: skip
    runner = FakeRunner()
    executor = Executor(journal=journal, runner=runner, instance_id="test-1", lock=FakeLock(),
                        clock=Clock(NOW), sleep=no_sleep, poll_seconds=AN_HOUR,
                        recovery_interval_seconds=AN_HOUR)  # fmt: skip
    runtime = Runtime(load_settings(), journal=journal, pack=pack)
    engine = DecisionEngine(journal=journal, pack=pack, facts=FakeFacts({}), dry_run=dry_run,
                            clock=Clock(NOW), poll_seconds=AN_HOUR,
                            on_decision=runtime._decided(executor))  # fmt: skip
    loop = asyncio.get_running_loop()
    async with running(loop.create_task(engine.run()), loop.create_task(executor.run())):
        # Both root tasks are idle, each waiting out its hour-long poll.
        await eventually(remediations(journal), lambda items: not items, timeout=10, what="idle")
        await journal_alerts(journal, [alert(name="PodNotReady", fingerprint="pnr",
                                             starts_at=(NOW - timedelta(minutes=5)).isoformat())])  # fmt: skip
        engine.wake()  # as intake does after journaling
        ended = RemediationStatus.DRY_RUN if dry_run else RemediationStatus.SUCCEEDED
        [item] = await eventually(
            remediations(journal),
            lambda items: len(items) == 1 and items[0].status is ended and bool(runner.calls),
            timeout=10,
            what="the plan claimed and run",
        )
    assert item.action is not None and item.action.value == "rollback"
    assert all(rehearsed is dry_run for _, rehearsed in runner.calls)
