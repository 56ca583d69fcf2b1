"""The shutdown budget and the closing order, with an injected clock."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from remediator.runtime import Closing, ShutdownBudget


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_phases_share_one_budget_and_keep_a_reserve() -> None:
    clock = FakeClock()
    budget = ShutdownBudget(20.0, clock=clock)
    assert budget.remaining() == 20.0
    assert budget.remaining(reserve=True) == 15.0  # a quarter is kept for the last phases
    clock.now += 12.0
    assert budget.remaining() == 8.0
    assert budget.remaining(reserve=True) == 3.0
    clock.now += 10.0
    assert budget.remaining() == 0.0
    assert budget.remaining(reserve=True) == 0.0
    assert budget.elapsed() == 22.0


async def test_a_phase_that_overruns_is_abandoned_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    budget = ShutdownBudget(0.05)
    never = asyncio.Event()
    await budget.run("stuck phase", never.wait(), may_use_reserve=True)
    assert "stuck phase did not finish within the budget" in caplog.text


async def test_a_failing_phase_does_not_stop_the_sequence(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def boom() -> None:
        raise RuntimeError("broker gone")

    budget = ShutdownBudget(5.0)
    await budget.run("outbox flush", boom())
    after: list[str] = []

    async def next_phase() -> None:
        after.append("ran")

    await budget.run("next", next_phase())
    assert after == ["ran"]
    assert "outbox flush failed: RuntimeError('broker gone')" in caplog.text


async def test_every_close_runs_in_reverse_order_even_when_one_raises(
    caplog: pytest.LogCaptureFixture,
) -> None:
    closed: list[str] = []

    def closer(name: str, *, fails: bool = False):  # type: ignore[no-untyped-def]
        async def close() -> None:
            closed.append(name)
            if fails:
                raise OSError(f"{name} close failed")

        return close

    caplog.set_level(logging.ERROR)
    async with contextlib.AsyncExitStack() as stack:
        closing = Closing(stack)
        closing.add("journal", closer("journal"))
        closing.add("kafka producer", closer("kafka producer", fails=True))
        closing.add("http listener", closer("http listener", fails=True))
    assert closed == ["http listener", "kafka producer", "journal"]
    assert "closing the kafka producer failed" in caplog.text
    assert "closing the http listener failed" in caplog.text


async def test_a_close_that_hangs_is_abandoned_within_the_budget() -> None:
    clock = FakeClock()
    closed: list[str] = []
    hang = asyncio.Event()

    async def hangs() -> None:
        await hang.wait()

    async def journal_close() -> None:
        closed.append("journal")

    async with contextlib.AsyncExitStack() as stack:
        closing = Closing(stack)
        closing.add("journal", journal_close)
        closing.add("slack client", hangs)
        # The budget and the closes' shared grace are spent: each close gets a moment.
        closing.budget = ShutdownBudget(1.0, clock=clock)
        clock.now += 5.0
        closing.grace_seconds = 0.0
    assert closed == ["journal"]
