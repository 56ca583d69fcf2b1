"""Per-key exponential backoff with equal jitter, judged against the caller's clock.

The n-th failure in a row waits ``c/2 + rand() * c/2`` seconds, ``c = min(max,
base * 2**n)`` ("equal jitter"): replicas refused by the same holder spread their
retries instead of asking again together, and, unlike full jitter, no wait is
shorter than half its period, so a key that keeps failing costs at most one attempt
per ``max/2``, whatever the draws.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

_MAX_DOUBLINGS = 62  # far past any cap; keeps 2**n a finite float


@dataclass(slots=True)
class _Wait:
    failures: int
    not_before: datetime


class Backoff:
    def __init__(
        self, *, base_seconds: float, max_seconds: float, rand: Callable[[], float]
    ) -> None:
        if base_seconds <= 0 or max_seconds < base_seconds:
            raise ValueError("backoff needs 0 < base_seconds <= max_seconds")
        self._base = base_seconds
        self._max = max_seconds
        self._rand = rand
        self._waits: dict[str, _Wait] = {}

    def ready(self, key: str, now: datetime) -> bool:
        """True when ``key`` may be tried now (never failed, or its wait is over)."""
        wait = self._waits.get(key)
        return wait is None or now >= wait.not_before

    def waiting(self, key: str) -> bool:
        """True between a failure and the next success (one wait, however many attempts)."""
        return key in self._waits

    def failures(self, key: str) -> int:
        wait = self._waits.get(key)
        return 0 if wait is None else wait.failures

    def failed(self, key: str, now: datetime) -> float:
        """Record a failed attempt; return the seconds until the next one is allowed."""
        failures = self.failures(key)
        ceiling = min(self._max, self._base * 2.0 ** min(failures, _MAX_DOUBLINGS))
        delay = ceiling / 2 + self._rand() * ceiling / 2
        self._waits[key] = _Wait(failures + 1, now + timedelta(seconds=delay))
        return delay

    def succeeded(self, key: str) -> None:
        self._waits.pop(key, None)

    def keep_only(self, keys: Iterable[str]) -> None:
        """Forget the waits of every other key (what they waited for is gone)."""
        wanted = set(keys)
        self._waits = {k: w for k, w in self._waits.items() if k in wanted}

    def next_due(self, now: datetime) -> datetime | None:
        """When the earliest wait still running at ``now`` ends; None when none is."""
        return min((w.not_before for w in self._waits.values() if w.not_before > now), default=None)
