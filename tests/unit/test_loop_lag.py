"""The event-loop lag probe, on an injected clock and sleep: it observes how much later
than its interval the loop woke it, never a negative."""

from __future__ import annotations

import asyncio
import contextlib

from prometheus_client import CollectorRegistry

from remediator.metrics import Metrics
from remediator.runtime.looplag import LoopLagProbe


class SteppedClock:
    """Each sleep moves the clock by the next of ``overslept`` seconds past its interval."""

    def __init__(self, overslept: list[float]) -> None:
        self.now = 1000.0
        self.overslept = overslept
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds + self.overslept.pop(0)


async def test_each_probe_observes_the_overshoot_of_its_sleep() -> None:
    clock = SteppedClock([0.0, 0.004, 0.25])
    seen: list[float] = []
    probe = LoopLagProbe(observe=seen.append, interval_seconds=0.1, clock=clock,
                         sleep=clock.sleep)  # fmt: skip
    for _ in range(3):
        await probe.probe_once()
    assert clock.slept == [0.1, 0.1, 0.1]
    assert [round(lag, 6) for lag in seen] == [0.0, 0.004, 0.25]


async def test_a_clock_that_reads_early_never_observes_a_negative_lag() -> None:
    clock = SteppedClock([-0.01])
    seen: list[float] = []
    probe = LoopLagProbe(observe=seen.append, interval_seconds=0.1, clock=clock,
                         sleep=clock.sleep)  # fmt: skip
    assert await probe.probe_once() == 0.0
    assert seen == [0.0]


async def test_the_root_task_feeds_the_exported_histogram_until_cancelled() -> None:
    metrics = Metrics(CollectorRegistry())
    clock = SteppedClock([0.002] * 3 + [0.03] * 100)
    probed = asyncio.Event()

    async def sleep(seconds: float) -> None:
        await clock.sleep(seconds)
        if len(clock.slept) == 4:
            probed.set()
        await asyncio.sleep(0)

    probe = LoopLagProbe(observe=metrics.event_loop_lag.observe, clock=clock, sleep=sleep)
    task = asyncio.create_task(probe.run())
    try:
        await asyncio.wait_for(probed.wait(), timeout=10)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    registry = metrics.registry
    count = registry.get_sample_value("remediator_event_loop_lag_seconds_count")
    assert count is not None and count >= 3
    within_10ms = registry.get_sample_value("remediator_event_loop_lag_seconds_bucket",
                                            {"le": "0.01"})  # fmt: skip
    assert within_10ms == 3  # the three 2 ms overshoots; the 30 ms ones fall above
