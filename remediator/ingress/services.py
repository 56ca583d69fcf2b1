"""``GET /api/v1/services``: each catalog service with its automation level, when and by
what that level last changed, and what its remediations of the last 30 days came to, so
a team can move a service up the trust ladder on evidence."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from remediator.domain.lifecycle import utc_text
from remediator.domain.rules import RulePack
from remediator.ports import AutomationLevelChange, AutomationLevels, ServiceOutcomes, ServiceStats

WINDOW_DAYS = 30


class ServicesJournal(AutomationLevels, ServiceStats, Protocol):
    """The journal roles the listing reads."""


class ServicesView:
    def __init__(
        self,
        *,
        journal: ServicesJournal,
        pack: RulePack,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._journal = journal
        self._pack = pack
        self._clock = clock

    async def listing(self) -> dict[str, Any]:
        """The API body; raises TemporaryError when the journal is unavailable."""
        until = self._clock()
        since = until - timedelta(days=WINDOW_DAYS)
        changes = await self._journal.automation_levels()
        outcomes = await self._journal.service_outcomes(since=since, until=until)
        items = [
            self._item(name, changes.get(name), outcomes.get(name))
            for name in sorted(self._pack.services)
        ]
        window = {"days": WINDOW_DAYS, "since": utc_text(since), "until": utc_text(until)}
        return {"window": window, "items": items}

    def _item(
        self, name: str, change: AutomationLevelChange | None, outcome: ServiceOutcomes | None
    ) -> dict[str, Any]:
        return {
            "service": name,
            "namespace": self._pack.services[name].namespace,
            "automation": self._pack.automation(name).value,
            "automation_changed": None if change is None else _change(change),
            "last_30_days": _outcomes(outcome),
        }


def _change(change: AutomationLevelChange) -> dict[str, Any]:
    # ``to`` is the level recorded last: during a rolling update of the rules it may
    # differ from the level this replica still acts on (``automation``).
    return {
        "at": utc_text(change.changed_at),
        "by": change.changed_by,
        "from": None if change.previous is None else change.previous.value,
        "to": change.level.value,
    }


def _outcomes(outcome: ServiceOutcomes | None) -> dict[str, Any]:
    if outcome is None:
        return {"plans": 0, "succeeded": 0, "failed": 0, "needs_human": 0,
                "would_have_run": 0, "median_seconds_to_recover": None}  # fmt: skip
    median = outcome.median_seconds_to_recover
    return {
        "plans": outcome.plans,
        "succeeded": outcome.succeeded,
        "failed": outcome.failed,
        "needs_human": outcome.needs_human,
        "would_have_run": outcome.would_have_run,
        "median_seconds_to_recover": None if median is None else round(median, 3),
    }
