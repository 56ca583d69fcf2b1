"""AutomationLevels and ServiceStats on SQLite: each service's automation level over
time, and what its recent remediations came to (GET /api/v1/services)."""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Mapping
from datetime import datetime

from remediator.domain.automation import AutomationLevel, median_seconds
from remediator.domain.lifecycle import utc_text
from remediator.journal.sqlite.database import Role
from remediator.journal.sqlite.rows import parse_utc
from remediator.ports import AutomationLevelChange, ServiceOutcomes

_CHANGE_COLUMNS = "service, level, previous, changed_at, changed_by"
# The newest row of each service: rows only ever grow, so the highest seq is the last.
_LATEST = (
    f"SELECT {_CHANGE_COLUMNS} FROM automation_levels"
    " WHERE seq IN (SELECT max(seq) FROM automation_levels GROUP BY service)"
)
# Outcomes of the plans meant to change something (see ServiceOutcomes); the statuses
# and reason are the lifecycle's and the decision's own values.
_OUTCOMES = """
SELECT service,
       sum(status NOT IN ('skipped', 'dry-run')),
       sum(status = 'succeeded'),
       sum(status = 'failed'),
       sum(status = 'needs_human'),
       sum(status = 'skipped' AND reason = 'automation_notify')
FROM remediations
WHERE created_at >= ? AND created_at < ? AND action IS NOT NULL AND action != 'notify_only'
GROUP BY service
"""
_RECOVERIES = """
SELECT service, created_at, finished_at FROM remediations
WHERE created_at >= ? AND created_at < ? AND status = 'succeeded' AND finished_at IS NOT NULL
  AND action IS NOT NULL AND action != 'notify_only'
"""


def _change(row: tuple[str, str, str | None, str, str]) -> AutomationLevelChange:
    service, level, previous, changed_at, changed_by = row
    return AutomationLevelChange(
        service=service,
        level=AutomationLevel(level),
        previous=None if previous is None else AutomationLevel(previous),
        changed_at=parse_utc(changed_at),
        changed_by=changed_by,
    )


def _latest(conn: sqlite3.Connection) -> dict[str, AutomationLevelChange]:
    return {row[0]: _change(row) for row in conn.execute(_LATEST).fetchall()}


class SqliteAutomation(Role):
    async def record_automation_levels(
        self, levels: Mapping[str, AutomationLevel], *, by: str, at: datetime
    ) -> list[AutomationLevelChange]:
        stamp = utc_text(at)

        def write(conn: sqlite3.Connection) -> list[AutomationLevelChange]:
            # One writer and BEGIN IMMEDIATE: nobody records between the read and the insert.
            current = _latest(conn)
            changes = []
            for service in sorted(levels):
                level = levels[service]
                before = current.get(service)
                if before is not None and before.level is level:
                    continue
                previous = None if before is None else before.level
                conn.execute(
                    f"INSERT INTO automation_levels ({_CHANGE_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                    (service, level.value, None if previous is None else previous.value, stamp, by),
                )
                changes.append(
                    AutomationLevelChange(
                        service=service,
                        level=level,
                        previous=previous,
                        changed_at=at,
                        changed_by=by,
                    )
                )
            return changes

        recorded: list[AutomationLevelChange] = await self._db.transaction(write)
        return recorded

    async def automation_levels(self) -> dict[str, AutomationLevelChange]:
        return await self._db.read(_latest)

    async def automation_level_history(
        self, *, service: str, limit: int = 50
    ) -> list[AutomationLevelChange]:
        def query(conn: sqlite3.Connection) -> list[AutomationLevelChange]:
            rows = conn.execute(
                f"SELECT {_CHANGE_COLUMNS} FROM automation_levels WHERE service = ?"
                " ORDER BY seq DESC LIMIT ?",
                (service, limit),
            ).fetchall()
            return [_change(row) for row in rows]

        return await self._db.read(query)

    async def service_outcomes(
        self, *, since: datetime, until: datetime
    ) -> dict[str, ServiceOutcomes]:
        window = (utc_text(since), utc_text(until))

        def query(conn: sqlite3.Connection) -> dict[str, ServiceOutcomes]:
            # SQLite has no median: the durations come back and are reduced here, as
            # PostgreSQL's percentile_cont(0.5) would.
            durations: dict[str, list[float]] = defaultdict(list)
            for service, created, finished in conn.execute(_RECOVERIES, window):
                seconds = (parse_utc(finished) - parse_utc(created)).total_seconds()
                durations[service].append(seconds)
            return {
                service: ServiceOutcomes(
                    service=service,
                    plans=plans,
                    succeeded=succeeded,
                    failed=failed,
                    needs_human=needs_human,
                    would_have_run=would_have_run,
                    median_seconds_to_recover=median_seconds(durations[service]),
                )
                for service, plans, succeeded, failed, needs_human, would_have_run in conn.execute(
                    _OUTCOMES, window
                )
            }

        return await self._db.read(query)
