"""Measures how responsive the event loop is: a root task sleeps a fixed interval and
observes how much later than asked it woke.

Everything the daemon does shares one event loop; a callback that runs long (a big
batch decided without yielding, a synchronous parse) delays every webhook, decision
and step behind it. The overshoot of a short sleep is that delay, as the loop's other
tasks felt it at that moment.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

# Often enough for a p99 over a storm of seconds; cheap enough to go unnoticed.
INTERVAL_SECONDS = 0.1


class LoopLagProbe:
    def __init__(
        self,
        *,
        observe: Callable[[float], None],
        interval_seconds: float = INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._observe = observe
        self._interval = interval_seconds
        self._clock = clock
        self._sleep = sleep

    async def run(self) -> None:
        """Root task: one observation per interval, until cancelled."""
        while True:
            await self.probe_once()

    async def probe_once(self) -> float:
        """Sleep one interval; observe and return how late the loop woke us."""
        started = self._clock()
        await self._sleep(self._interval)
        lag = max(0.0, self._clock() - started - self._interval)
        self._observe(lag)
        return lag
