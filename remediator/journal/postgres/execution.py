"""ExecutionLog: claims and timelines of running plans, fenced by the claim's holder.

Every write about a claimed remediation locks its row (``FOR UPDATE``) and checks, in
the same transaction, that the writer still holds the claim (else ``ClaimLost``) and
that the lifecycle allows the status change (else ``IllegalTransition``); nothing is
written in either case. ``take_over_claim`` is a compare-and-set on the holder, so of
two replicas recovering the same dead replica's plan, one wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from remediator.domain.errors import PermanentError
from remediator.domain.lifecycle import (
    ClaimLost,
    IllegalTransition,
    Remediation,
    RemediationStatus,
    StepRecord,
    StepStatus,
    check_transition,
)
from remediator.journal.postgres.database import Database
from remediator.journal.postgres.remediations import full_remediations, steps_of
from remediator.journal.postgres.rows import (
    INSERT_OUTBOX,
    WITH_DECISION,
    json_text,
    outbox_params,
    pg_text,
    remediation,
)
from remediator.ports import OutboxMessage

_RUNNABLE = (RemediationStatus.PLANNED.value, RemediationStatus.DRY_RUN.value)


class PgExecutionLog:
    _db: Database

    async def runnable_remediations(self, *, limit: int) -> list[Remediation]:
        async def query(conn: asyncpg.Connection) -> list[Remediation]:
            rows = await conn.fetch(
                f"SELECT {WITH_DECISION} FROM remediations WHERE finished_at IS NULL"
                " AND claimed_by IS NULL AND status = ANY($1::text[]) ORDER BY seq LIMIT $2",
                list(_RUNNABLE),
                limit,
            )
            return [remediation(row) for row in rows]

        return await self._db.read("read runnable remediations", query)

    async def claim_remediation(
        self,
        remediation_id: str,
        *,
        by: str,
        at: datetime,
        to: RemediationStatus,
        outbox: Sequence[OutboxMessage] = (),
    ) -> bool:
        async def write(conn: asyncpg.Connection) -> bool:
            row = await conn.fetchrow(
                "SELECT status, claimed_by, finished_at FROM remediations WHERE id = $1 FOR UPDATE",
                remediation_id,
            )
            if row is None or row["claimed_by"] is not None or row["finished_at"] is not None:
                return False
            check_transition(remediation_id, RemediationStatus(row["status"]), to)
            await conn.execute(
                "UPDATE remediations SET status = $2, claimed_by = $3, claimed_at = $4,"
                " updated_at = $4 WHERE id = $1",
                remediation_id,
                to.value,
                by,
                at,
            )
            if outbox:
                await conn.execute(INSERT_OUTBOX, *outbox_params(outbox))
            return True

        return await self._db.write("claim remediation", write)

    async def unfinished_claims(self, *, holder: str, stale_before: datetime) -> list[Remediation]:
        async def query(conn: asyncpg.Connection) -> list[Remediation]:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                rows = await conn.fetch(
                    f"SELECT {WITH_DECISION} FROM remediations r"
                    " WHERE finished_at IS NULL AND claimed_by IS NOT NULL"
                    " AND (claimed_by = $1 OR NOT EXISTS ("
                    "   SELECT 1 FROM heartbeats h"
                    "   WHERE h.instance = r.claimed_by AND h.beat_at >= $2))"
                    " ORDER BY seq",
                    holder,
                    stale_before,
                )
                return await full_remediations(conn, rows)

        return await self._db.read("read unfinished claims", query)

    async def take_over_claim(
        self, remediation_id: str, *, from_holder: str, by: str, at: datetime
    ) -> bool:
        async def write(conn: asyncpg.Connection) -> bool:
            taken = await conn.fetchval(
                "UPDATE remediations SET claimed_by = $3, claimed_at = $4, updated_at = $4"
                " WHERE id = $1 AND claimed_by = $2 AND finished_at IS NULL RETURNING id",
                remediation_id,
                from_holder,
                by,
                at,
            )
            return taken is not None

        return await self._db.write("take over claim", write)

    async def step_started(
        self, remediation_id: str, *, holder: str, idx: int, kind: str, at: datetime
    ) -> None:
        async def write(conn: asyncpg.Connection) -> None:
            await _hold(conn, remediation_id, holder)
            await conn.execute(
                "INSERT INTO remediation_steps (remediation_id, idx, kind, status, started_at)"
                " VALUES ($1, $2, $3, 'started', $4)"
                " ON CONFLICT (remediation_id, idx) DO UPDATE SET kind = excluded.kind,"
                " status = 'started', started_at = excluded.started_at, finished_at = NULL,"
                " detail = '{}'",
                remediation_id,
                idx,
                kind,
                at,
            )

        await self._db.write("journal step start", write)

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
        async def write(conn: asyncpg.Connection) -> None:
            await _hold(conn, remediation_id, holder)
            await conn.execute(
                "UPDATE remediation_steps SET status = $3, detail = $4::text::jsonb,"
                " finished_at = $5 WHERE remediation_id = $1 AND idx = $2",
                remediation_id,
                idx,
                StepStatus(status).value,
                json_text(detail),
                at,
            )

        await self._db.write("journal step end", write)

    async def remediation_steps(self, remediation_id: str) -> list[StepRecord]:
        async def query(conn: asyncpg.Connection) -> list[StepRecord]:
            return (await steps_of(conn, [remediation_id]))[remediation_id]

        return await self._db.read("read steps", query)

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
        async def write(conn: asyncpg.Connection) -> None:
            row = await _hold(conn, remediation_id, holder)
            old = RemediationStatus(row["status"])
            if row["finished_at"] is not None:
                # The same end again (its first write outlived the caller's deadline but
                # stood): nothing to do. Any other end of a finished plan is refused.
                if old is status:
                    return
                raise IllegalTransition(remediation_id, old, status)
            check_transition(remediation_id, old, status)
            await conn.execute(
                "UPDATE remediations SET status = $2, reason = coalesce($3, reason),"
                " finished_at = $4, updated_at = $4 WHERE id = $1",
                remediation_id,
                status.value,
                pg_text(reason),
                at,
            )
            if outbox:
                await conn.execute(INSERT_OUTBOX, *outbox_params(outbox))

        await self._db.write("finish remediation", write)


async def _hold(conn: asyncpg.Connection, remediation_id: str, holder: str) -> asyncpg.Record:
    """The remediation's row, locked, if ``holder`` holds its claim; ClaimLost otherwise."""
    row = await conn.fetchrow(
        "SELECT status, claimed_by, finished_at FROM remediations WHERE id = $1 FOR UPDATE",
        remediation_id,
    )
    if row is None:
        raise PermanentError(f"remediation {remediation_id}: no such remediation")
    if row["claimed_by"] != holder:
        raise ClaimLost(remediation_id, holder)
    return row
