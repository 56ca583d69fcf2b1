"""Warnings about clients' mistakes, at most one line per kind per interval."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable


class ThrottledWarnings:
    """One WARNING per key per ``interval_seconds``; the rest are counted, not logged.

    A broken sender repeats its mistake on every request; the log keeps one line per
    interval (with how many like it were left out) and the metrics count every one.
    Keys must come from a small set (e.g. route and status code): one entry each is kept.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval_seconds: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval_seconds
        self._monotonic = monotonic
        self._last_logged: dict[Hashable, float] = {}
        self._suppressed: dict[Hashable, int] = {}

    def warning(self, key: Hashable, message: str, *args: object) -> bool:
        """Log ``message % args`` unless ``key`` was logged within the interval."""
        now = self._monotonic()
        last = self._last_logged.get(key)
        if last is not None and now - last < self._interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        self._last_logged[key] = now
        suppressed = self._suppressed.pop(key, 0)
        if suppressed and last is not None:
            message += " (%d more like it in the last %.0fs were not logged)"
            args = (*args, suppressed, now - last)
        self._logger.warning(message, *args)
        return True
