"""Root tasks restart after a bug, with backoff, instead of taking the daemon down; the
heartbeat root task beats on through journal faults."""

from __future__ import annotations

import asyncio
import logging

import pytest

from remediator.domain.errors import TemporaryError
from remediator.runtime import keep_running
from remediator.runtime.supervision import beat_forever


async def test_a_root_task_that_raises_is_restarted_with_growing_waits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    waits: list[float] = []
    crashes: list[str] = []
    runs = 0
    forever = asyncio.Event()

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    async def engine() -> None:
        nonlocal runs
        runs += 1
        if runs <= 4:
            raise KeyError("bug")
        await forever.wait()

    task = asyncio.create_task(
        keep_running(
            "decision-engine", engine, on_crash=crashes.append, sleep=sleep, clock=lambda: now[0]
        )
    )
    while runs < 5:
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert waits == [1.0, 2.0, 4.0, 8.0]
    assert crashes == ["decision-engine"] * 4
    assert "root task decision-engine failed (KeyError: 'bug'); restarting it in 1s" in caplog.text


async def test_a_task_that_ran_long_before_failing_starts_its_backoff_again() -> None:
    now = [0.0]
    waits: list[float] = []
    runs = 0
    forever = asyncio.Event()

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async def relay() -> None:
        nonlocal runs
        runs += 1
        if runs == 3:
            now[0] += 3600  # an hour of good work, then the same bug
        if runs <= 3:
            raise RuntimeError("bug")
        await forever.wait()

    task = asyncio.create_task(
        keep_running(
            "outbox-relay", relay, on_crash=lambda _: None, sleep=sleep, clock=lambda: now[0]
        )
    )
    while runs < 4:
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert waits == [1.0, 2.0, 1.0]


async def test_a_root_task_that_returns_is_restarted_too() -> None:
    runs = 0
    forever = asyncio.Event()

    async def sleep(seconds: float) -> None:
        pass

    async def returns_once() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            return
        await forever.wait()

    crashes: list[str] = []
    task = asyncio.create_task(keep_running("x", returns_once, on_crash=crashes.append,
                                            sleep=sleep))  # fmt: skip
    while runs < 2:
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert crashes == ["x"]


class BeatingJournal:
    """The journal's lifecycle role (our own port): beats fail while ``failing`` says so."""

    def __init__(self, failing: list[bool]) -> None:
        self.failing = failing
        self.beats = 0

    async def check_writable(self) -> None:
        self.beats += 1
        if self.failing.pop(0):
            raise TemporaryError("disk full", delay=1.0)


async def test_the_heartbeat_beats_every_interval_and_rides_out_failures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    journal = BeatingJournal([False, True, True, False, False])
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 5:
            raise asyncio.CancelledError  # the shutdown sequence stops it

    caplog.set_level(logging.INFO, logger="remediator.runtime.supervision")
    with pytest.raises(asyncio.CancelledError):
        await beat_forever(journal, interval_seconds=5.0, sleep=sleep)  # type: ignore[arg-type]
    assert (journal.beats, slept) == (5, [5.0] * 5)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "journal heartbeat failed (retrying every 5s): disk full",
        "journal heartbeat written again",
    ]
