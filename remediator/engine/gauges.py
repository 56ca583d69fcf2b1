"""Gauges of journal state: plans awaiting approval, whether the circuit breaker is
open, and how far deciding is behind intake.

Read on a timer by a root task, never at scrape time: a scrape must not wait for the
journal (a slow or unavailable one would make /metrics time out exactly when it is
wanted). Every replica reads the shared journal, so each reports the same values;
aggregate them with ``max``, not ``sum``. The sleep is injected so tests do not wait.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from remediator.domain.errors import PermanentError, TemporaryError
from remediator.domain.lifecycle import RemediationStatus
from remediator.ports import CircuitStore, DecisionBacklogs, RemediationStore

log = logging.getLogger(__name__)

REFRESH_SECONDS = 15.0  # about one scrape interval: fresh enough, two cheap reads each
PAGE = 500
# An undecided signal this old is no storm's queue (seconds): say so in the log too,
# for whoever has no alert on the gauge, at most once a minute while it lasts.
BEHIND_SECONDS = 60.0


class GaugeJournal(CircuitStore, RemediationStore, DecisionBacklogs, Protocol):
    """The journal roles read: the circuit breaker, remediations by status, and the
    signals not yet decided."""


@dataclass(frozen=True, slots=True)
class JournalState:
    approvals_waiting: int
    circuit_open: bool
    undecided_signals: int = 0
    # How long the first undecided signal has waited (0 when none waits).
    undecided_seconds: float = 0.0


def _utc_now() -> datetime:
    return datetime.now(UTC)


class JournalGauges:
    def __init__(
        self,
        *,
        journal: GaugeJournal,
        on_state: Callable[[JournalState], None],
        interval_seconds: float = REFRESH_SECONDS,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_internal_error: Callable[[str], None] | None = None,
        page_size: int = PAGE,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._journal = journal
        self._clock = clock
        self._page = page_size
        self._on_state = on_state
        self._interval = interval_seconds
        self._sleep = sleep
        self._on_internal_error = on_internal_error
        self._behind_told: datetime | None = None  # None: deciding keeps up

    async def run(self) -> None:
        """Root task: refresh every ``interval_seconds`` until cancelled. A failed read
        keeps the last values (the journal's own health shows elsewhere)."""
        while True:
            try:
                await self.refresh()
            except (TemporaryError, PermanentError) as exc:
                log.debug("journal gauges not refreshed: %s", exc)
            except Exception as exc:
                log.error("journal gauges failed (%s)", type(exc).__name__, exc_info=exc)
                if self._on_internal_error is not None:
                    self._on_internal_error(type(exc).__name__)
            await self._sleep(self._interval)

    async def refresh(self) -> JournalState:
        backlog = await self._journal.decision_backlog()
        waited = 0.0
        if backlog.oldest_received_at is not None:
            # Another replica's clock may run ahead of this one's: never below 0.
            waited = max((self._clock() - backlog.oldest_received_at).total_seconds(), 0.0)
        state = JournalState(
            approvals_waiting=await self._count(RemediationStatus.AWAITING_APPROVAL),
            circuit_open=(await self._journal.circuit()).open,
            undecided_signals=backlog.signals,
            undecided_seconds=waited,
        )
        self._on_state(state)
        self._tell_backlog(state)
        return state

    def _tell_backlog(self, state: JournalState) -> None:
        now = self._clock()
        if state.undecided_seconds >= BEHIND_SECONDS:
            told = self._behind_told
            if told is None or (now - told).total_seconds() >= BEHIND_SECONDS:
                log.warning(
                    "deciding is behind: %d signal(s) journaled and not yet decided, the "
                    "oldest for %.0fs (the decision engine stopped, or a storm outruns it); "
                    "remediations start that much late",
                    state.undecided_signals, state.undecided_seconds,
                )  # fmt: skip
                self._behind_told = now
        elif self._behind_told is not None:
            log.info(
                "deciding caught up: %d signal(s) wait, the oldest for %.1fs",
                state.undecided_signals, state.undecided_seconds,
            )  # fmt: skip
            self._behind_told = None

    async def _count(self, status: RemediationStatus) -> int:
        # Pages of list rows (no decisions or steps): few plans wait at a time.
        total, cursor = 0, None
        while True:
            page = await self._journal.list_remediations(
                status=status, limit=self._page, cursor=cursor
            )
            total += len(page.items)
            if page.next_cursor is None:
                return total
            cursor = page.next_cursor
