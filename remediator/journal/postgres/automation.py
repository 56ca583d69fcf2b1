"""AutomationLevels and ServiceStats: each service's automation level over time, and
what its recent remediations came to (GET /api/v1/services)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import asyncpg

from remediator.domain.automation import AutomationLevel
from remediator.journal.postgres.database import Database
from remediator.journal.postgres.rows import pg_text
from remediator.ports import AutomationLevelChange, ServiceOutcomes

_CHANGE_COLUMNS = "service, level, previous, changed_at, changed_by"
_LATEST = (
    f"SELECT DISTINCT ON (service) {_CHANGE_COLUMNS} FROM automation_levels"
    " ORDER BY service, seq DESC"
)
# Outcomes of the plans meant to change something (see ServiceOutcomes).
_OUTCOMES = """
SELECT service,
       count(*) FILTER (WHERE status NOT IN ('skipped', 'dry-run')) AS plans,
       count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status = 'needs_human') AS needs_human,
       count(*) FILTER (WHERE status = 'skipped' AND reason = 'automation_notify')
           AS would_have_run,
       percentile_cont(0.5) WITHIN GROUP (
           ORDER BY extract(epoch FROM finished_at - created_at)::float8
       ) FILTER (WHERE status = 'succeeded' AND finished_at IS NOT NULL) AS median_recover
FROM remediations
WHERE created_at >= $1 AND created_at < $2 AND action IS NOT NULL AND action <> 'notify_only'
GROUP BY service
"""


def _change(row: asyncpg.Record) -> AutomationLevelChange:
    previous = row["previous"]
    return AutomationLevelChange(
        service=row["service"],
        level=AutomationLevel(row["level"]),
        previous=None if previous is None else AutomationLevel(previous),
        changed_at=row["changed_at"],
        changed_by=row["changed_by"],
    )


class PgAutomation:
    _db: Database

    async def record_automation_levels(
        self, levels: Mapping[str, AutomationLevel], *, by: str, at: datetime
    ) -> list[AutomationLevelChange]:
        async def write(conn: asyncpg.Connection) -> list[AutomationLevelChange]:
            # Conflicts with itself: a second replica recording at the same time waits,
            # then compares with what the first recorded.
            await conn.execute("LOCK TABLE automation_levels IN SHARE ROW EXCLUSIVE MODE")
            current = {row["service"]: _change(row) for row in await conn.fetch(_LATEST)}
            changes = []
            for service in sorted(levels):
                level = levels[service]
                before = current.get(service)
                if before is not None and before.level is level:
                    continue
                previous = None if before is None else before.level
                await conn.execute(
                    f"INSERT INTO automation_levels ({_CHANGE_COLUMNS})"
                    " VALUES ($1, $2, $3, $4, $5)",
                    pg_text(service),
                    level.value,
                    None if previous is None else previous.value,
                    at,
                    pg_text(by),
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

        return await self._db.write("record automation levels", write)

    async def automation_levels(self) -> dict[str, AutomationLevelChange]:
        async def query(conn: asyncpg.Connection) -> dict[str, AutomationLevelChange]:
            return {row["service"]: _change(row) for row in await conn.fetch(_LATEST)}

        return await self._db.read("read automation levels", query)

    async def automation_level_history(
        self, *, service: str, limit: int = 50
    ) -> list[AutomationLevelChange]:
        async def query(conn: asyncpg.Connection) -> list[AutomationLevelChange]:
            rows = await conn.fetch(
                f"SELECT {_CHANGE_COLUMNS} FROM automation_levels WHERE service = $1"
                " ORDER BY seq DESC LIMIT $2",
                service,
                limit,
            )
            return [_change(row) for row in rows]

        return await self._db.read("read automation level history", query)

    async def service_outcomes(
        self, *, since: datetime, until: datetime
    ) -> dict[str, ServiceOutcomes]:
        async def query(conn: asyncpg.Connection) -> dict[str, ServiceOutcomes]:
            rows = await conn.fetch(_OUTCOMES, since, until)
            return {
                row["service"]: ServiceOutcomes(
                    service=row["service"],
                    plans=row["plans"],
                    succeeded=row["succeeded"],
                    failed=row["failed"],
                    needs_human=row["needs_human"],
                    would_have_run=row["would_have_run"],
                    median_seconds_to_recover=row["median_recover"],
                )
                for row in rows
            }

        return await self._db.read("read service outcomes", query)
