"""A storm's batch is decided a slice at a time: the event loop runs other tasks (webhooks,
plan steps, the lag probe) between slices instead of waiting for the whole batch."""

from __future__ import annotations

import asyncio
import contextlib
import itertools

from remediator.domain.failpoints import Failpoints
from remediator.domain.rules import RulePack
from remediator.engine.decider import DECIDE_SLICE, DecisionEngine
from remediator.journal.sqlite import SqliteJournal
from tests.unit.engine.test_decider import NOW, Clock, FakeFacts, cpu_signal, journal, pack

__all__ = ["journal", "pack"]  # fixtures


class Ticks:
    """Counts how often another task got the loop; ``hit`` (called as each signal is
    decided) notes the count seen then."""

    def __init__(self) -> None:
        self.count = 0
        self.seen: list[int] = []

    async def tick_forever(self) -> None:
        while True:
            self.count += 1
            await asyncio.sleep(0)


class SeeingFailpoints(Failpoints):
    def __init__(self, ticks: Ticks) -> None:
        super().__init__()
        self.ticks = ticks

    def hit(self, point: str, key: str | None = None) -> None:
        if point == "decider.signal":
            self.ticks.seen.append(self.ticks.count)


async def test_other_tasks_run_between_slices_of_a_batch(
    journal: SqliteJournal, pack: RulePack
) -> None:
    signals = 8 * DECIDE_SLICE
    await journal.record_signals([cpu_signal(f"pod-{n}") for n in range(signals)])
    ticks = Ticks()
    engine = DecisionEngine(journal=journal, pack=pack, facts=FakeFacts({"checkout": (3, None)}),
                            dry_run=False, clock=Clock(NOW), batch_size=signals,
                            failpoints=SeeingFailpoints(ticks))  # fmt: skip
    ticker = asyncio.create_task(ticks.tick_forever())
    try:
        assert await engine.run_once() == signals
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
    assert len(ticks.seen) == signals
    # The batch's reads are cached after its first signals: from then on only the
    # engine's own yields let the ticker run, once per slice and never more rarely.
    later = ticks.seen[DECIDE_SLICE:]
    runs_without_a_tick = max(len(list(group)) for _, group in itertools.groupby(later))
    assert runs_without_a_tick <= DECIDE_SLICE
