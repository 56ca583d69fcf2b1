"""Keeping root tasks running, and shutting down within one budget."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from remediator.domain.errors import PermanentError, TemporaryError
from remediator.ports import JournalLifecycle

log = logging.getLogger(__name__)


async def beat_forever(
    journal: JournalLifecycle,
    *,
    interval_seconds: float,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Root task: this instance's heartbeat in the journal, every ``interval_seconds``.

    Other replicas take over the claims of an instance that stopped beating
    (journal.claim_stale_seconds). A failed beat is retried at the next interval; one
    line when beats start failing, one when they are written again.
    """
    failing = False
    while True:
        try:
            await journal.check_writable()
        except (TemporaryError, PermanentError) as exc:
            if not failing:
                log.warning("journal heartbeat failed (retrying every %gs): %s",
                            interval_seconds, exc)  # fmt: skip
            failing = True
        else:
            if failing:
                log.info("journal heartbeat written again")
            failing = False
        await sleep(interval_seconds)


async def keep_running(
    name: str,
    run: Callable[[], Awaitable[None]],
    *,
    on_crash: Callable[[str], None],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    max_backoff: float = 60.0,
) -> None:
    """Run a root task until cancelled; restart it, with backoff, when it raises.

    Each component contains its own inputs' errors; this is the last line behind them.
    A bug that escapes one must not take the whole daemon down, which would only meet
    the same state again after Kubernetes restarts it. A task that ran for longer than
    ``max_backoff`` before failing starts its backoff again from one second.
    """
    failures = 0
    while True:
        started = clock()
        try:
            await run()
            raise RuntimeError("returned, though it should run until cancelled")
        except Exception as exc:  # counted, logged, restarted
            failures = 1 if clock() - started > max_backoff else failures + 1
            delay = min(2.0 ** (failures - 1), max_backoff)
            log.error("root task %s failed (%s: %s); restarting it in %.0fs",
                      name, type(exc).__name__, exc, delay, exc_info=exc)  # fmt: skip
            on_crash(name)
        await sleep(delay)


async def flush_until_empty(publish_once: Callable[[], Awaitable[int]]) -> None:
    """Publish until nothing is pending (or the first failure: it stays queued)."""
    while await publish_once():
        pass


class ShutdownBudget:
    """One deadline for the whole drain; each phase gets what is left of it.

    Phases that may take long (running plans) leave ``RESERVE_SHARE`` of the budget to
    the phases after them, so a slow plan cannot starve the outbox flush and closing.
    """

    RESERVE_SHARE = 0.25

    def __init__(self, total: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self._clock = clock
        self._started = clock()
        self._reserve = total * self.RESERVE_SHARE

    def elapsed(self) -> float:
        return self._clock() - self._started

    def remaining(self, *, reserve: bool = False) -> float:
        left = self.total - self.elapsed() - (self._reserve if reserve else 0.0)
        return max(left, 0.0)

    async def run(self, what: str, work: Awaitable[Any], *, may_use_reserve: bool = False) -> None:
        """Run one phase within the budget; log (never raise) when it fails or runs out.

        Phases that may use the reserve get all that is left; the others stop short of it.
        """
        timeout = self.remaining(reserve=not may_use_reserve)
        try:
            await asyncio.wait_for(work, timeout=max(timeout, 0.001))
        except TimeoutError:
            log.warning("shutdown: %s did not finish within the budget (%.0fs); moving on",
                        what, self.total)  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - one phase must not skip the others
            log.error("shutdown: %s failed: %r; moving on", what, exc)


class Closing:
    """Closes resources through an AsyncExitStack, each within the shutdown budget."""

    def __init__(self, stack: contextlib.AsyncExitStack) -> None:
        self._stack = stack
        self.budget: ShutdownBudget | None = None  # set when the drain starts
        # Once the plans used the whole budget, the closes still share this much more
        # (together, not each), so the journal always gets its turn.
        self.grace_seconds = 2.0

    def add(self, name: str, close: Callable[[], Awaitable[Any]]) -> None:
        async def closed() -> None:
            budget = self.budget
            left = 10.0 if budget is None else budget.total + self.grace_seconds - budget.elapsed()
            try:
                await asyncio.wait_for(close(), timeout=max(left, 0.05))
            except Exception as exc:  # noqa: BLE001 - every other close still runs
                log.error("shutdown: closing the %s failed: %r", name, exc)

        self._stack.push_async_callback(closed)
