"""ExecutionLog on SQLite: claims of plans, their timelines, and their ends.

Every write about a claimed remediation names the instance holding the claim and is
refused with ``ClaimLost`` (nothing written) once another instance took it over;
every status change is checked against the lifecycle in the write's transaction
(``IllegalTransition``, nothing written).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from remediator.domain.errors import PermanentError
from remediator.domain.lifecycle import (
    ClaimLost,
    IllegalTransition,
    Remediation,
    RemediationStatus,
    StepRecord,
    StepStatus,
    check_transition,
    utc_text,
)
from remediator.journal.sqlite.database import Role
from remediator.journal.sqlite.rows import (
    REMEDIATION_COLUMNS,
    full_remediation,
    insert_outbox,
    json_text,
    remediation,
    steps_of,
)
from remediator.ports import OutboxMessage

_RUNNABLE = (RemediationStatus.PLANNED, RemediationStatus.DRY_RUN)


class SqliteExecutionLog(Role):
    async def runnable_remediations(self, *, limit: int) -> list[Remediation]:
        def query(conn: sqlite3.Connection) -> list[Remediation]:
            rows = conn.execute(
                f"SELECT {REMEDIATION_COLUMNS} FROM remediations WHERE finished_at IS NULL"
                " AND claimed_at IS NULL AND status IN (?, ?) ORDER BY seq LIMIT ?",
                (*_RUNNABLE, limit),
            ).fetchall()
            return [remediation(row, with_decision=True) for row in rows]

        return await self._db.read(query)

    async def claim_remediation(
        self,
        remediation_id: str,
        *,
        by: str,
        at: datetime,
        to: RemediationStatus,
        outbox: Sequence[OutboxMessage] = (),
    ) -> bool:
        stamp = utc_text(at)

        def write(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT status, claimed_at, finished_at FROM remediations WHERE id = ?",
                (remediation_id,),
            ).fetchone()
            if row is None or row[1] is not None or row[2] is not None:
                return False  # gone, claimed by someone, or over
            check_transition(remediation_id, RemediationStatus(row[0]), to)
            conn.execute(
                "UPDATE remediations SET status = ?, claimed_by = ?, claimed_at = ?,"
                " updated_at = ? WHERE id = ?",
                (to, by, stamp, stamp, remediation_id),
            )
            insert_outbox(conn, outbox)
            return True

        claimed: bool = await self._db.transaction(write)
        return claimed

    async def unfinished_claims(self, *, holder: str, stale_before: datetime) -> list[Remediation]:
        def query(conn: sqlite3.Connection) -> list[Remediation]:
            rows = conn.execute(
                f"SELECT {REMEDIATION_COLUMNS} FROM remediations"
                " LEFT JOIN heartbeats ON heartbeats.instance = remediations.claimed_by"
                " WHERE finished_at IS NULL AND claimed_at IS NOT NULL"
                " AND (claimed_by = ? OR beat_at IS NULL OR beat_at < ?) ORDER BY seq",
                (holder, utc_text(stale_before)),
            ).fetchall()
            return [full_remediation(conn, row) for row in rows]

        return await self._db.read(query)

    async def take_over_claim(
        self, remediation_id: str, *, from_holder: str, by: str, at: datetime
    ) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            moved = conn.execute(
                "UPDATE remediations SET claimed_by = ?, updated_at = ? WHERE id = ?"
                " AND claimed_by = ? AND claimed_at IS NOT NULL AND finished_at IS NULL",
                (by, utc_text(at), remediation_id, from_holder),
            ).rowcount
            return bool(moved)

        taken: bool = await self._db.transaction(write)
        return taken

    async def step_started(
        self, remediation_id: str, *, holder: str, idx: int, kind: str, at: datetime
    ) -> None:
        def write(conn: sqlite3.Connection) -> None:
            _fence(conn, remediation_id, holder)
            # A resumable step started again after a crash replaces its unfinished row.
            conn.execute(
                "INSERT OR REPLACE INTO remediation_steps (remediation_id, idx, kind, status,"
                " started_at) VALUES (?, ?, ?, ?, ?)",
                (remediation_id, idx, kind, StepStatus.STARTED, utc_text(at)),
            )

        await self._db.transaction(write)

    async def step_finished(
        self,
        remediation_id: str,
        *,
        holder: str,
        idx: int,
        status: StepStatus,
        detail: dict[str, Any],
        at: datetime,
    ) -> None:
        def write(conn: sqlite3.Connection) -> None:
            _fence(conn, remediation_id, holder)
            conn.execute(
                "UPDATE remediation_steps SET status = ?, detail = ?, finished_at = ?"
                " WHERE remediation_id = ? AND idx = ?",
                (status, json_text(detail), utc_text(at), remediation_id, idx),
            )

        await self._db.transaction(write)

    async def remediation_steps(self, remediation_id: str) -> list[StepRecord]:
        return await self._db.read(lambda conn: steps_of(conn, remediation_id))

    async def finish_remediation(
        self,
        remediation_id: str,
        *,
        holder: str,
        status: RemediationStatus,
        reason: str | None,
        at: datetime,
        outbox: Sequence[OutboxMessage] = (),
    ) -> None:
        stamp = utc_text(at)

        def write(conn: sqlite3.Connection) -> None:
            old, finished = _fence(conn, remediation_id, holder)
            if finished:
                # The same end again (its first write outlived the caller's deadline but
                # stood): nothing to do. Any other end of a finished plan is refused.
                if old is status:
                    return
                raise IllegalTransition(remediation_id, old, status)
            check_transition(remediation_id, old, status)
            conn.execute(
                "UPDATE remediations SET status = ?, reason = coalesce(?, reason),"
                " finished_at = ?, updated_at = ? WHERE id = ?",
                (status, reason, stamp, stamp, remediation_id),
            )
            insert_outbox(conn, outbox)

        await self._db.transaction(write)


def _fence(
    conn: sqlite3.Connection, remediation_id: str, holder: str
) -> tuple[RemediationStatus, bool]:
    """The status and whether it finished; ``ClaimLost`` unless ``holder`` holds the claim."""
    row = conn.execute(
        "SELECT status, claimed_by, finished_at FROM remediations WHERE id = ?",
        (remediation_id,),
    ).fetchone()
    if row is None:
        raise PermanentError(f"remediation {remediation_id} is not in the journal")
    status, claimed_by, finished_at = row
    if claimed_by != holder:
        raise ClaimLost(remediation_id, holder)
    return RemediationStatus(status), finished_at is not None
