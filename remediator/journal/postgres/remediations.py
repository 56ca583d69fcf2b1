"""RemediationStore: remediations as people see and steer them (API, CLI)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from remediator.domain.approvals import ApprovalState
from remediator.domain.lifecycle import Remediation, RemediationStatus, StepRecord, check_transition
from remediator.domain.paging import check_limit, parse_cursor
from remediator.domain.record import Analysis, edited_analysis
from remediator.journal.postgres.database import Database
from remediator.journal.postgres.rows import (
    INSERT_OUTBOX,
    REMEDIATION_COLUMNS,
    REQUEST_COLUMNS,
    STEP_COLUMNS,
    VOTE_COLUMNS,
    WITH_DECISION,
    approval_state,
    outbox_params,
    pg_text,
    remediation,
    step,
)
from remediator.ports import OutboxMessage, RemediationPage


async def steps_of(conn: asyncpg.Connection, ids: Sequence[str]) -> dict[str, list[StepRecord]]:
    """The timelines of these remediations, each in step order."""
    rows = await conn.fetch(
        f"SELECT {STEP_COLUMNS} FROM remediation_steps WHERE remediation_id = ANY($1::text[])"
        " ORDER BY remediation_id, idx",
        list(ids),
    )
    timelines: dict[str, list[StepRecord]] = {rid: [] for rid in ids}
    for row in rows:
        timelines[row["remediation_id"]].append(step(row))
    return timelines


async def approvals_of(conn: asyncpg.Connection, ids: Sequence[str]) -> dict[str, ApprovalState]:
    """The approval states of those of these remediations that needed approval."""
    requests = await conn.fetch(
        f"SELECT {REQUEST_COLUMNS} FROM approval_requests WHERE remediation_id = ANY($1::text[])",
        list(ids),
    )
    if not requests:
        return {}
    votes = await conn.fetch(
        f"SELECT {VOTE_COLUMNS} FROM approval_votes WHERE remediation_id = ANY($1::text[])"
        " ORDER BY at, principal",
        [row["remediation_id"] for row in requests],
    )
    by_id: dict[str, list[asyncpg.Record]] = {row["remediation_id"]: [] for row in requests}
    for vote in votes:
        by_id[vote["remediation_id"]].append(vote)
    return {row["remediation_id"]: approval_state(row, by_id[row["remediation_id"]])
            for row in requests}  # fmt: skip


async def full_remediations(
    conn: asyncpg.Connection, rows: Sequence[asyncpg.Record]
) -> list[Remediation]:
    """Rows (with their decision) as remediations with their steps and approval state."""
    ids = [row["id"] for row in rows]
    timelines = await steps_of(conn, ids)
    approvals = await approvals_of(conn, ids)
    return [
        remediation(row, steps=timelines[row["id"]], approval=approvals.get(row["id"]))
        for row in rows
    ]


class PgRemediationStore:
    _db: Database

    async def list_remediations(
        self,
        *,
        service: str | None = None,
        status: RemediationStatus | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RemediationPage:
        check_limit(limit)
        before = None if cursor is None else parse_cursor(cursor)
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("service", service),
            ("status", None if status is None else status.value),
        ):
            if value is not None:
                params.append(value)
                clauses.append(f"{column} = ${len(params)}")
        if before is not None:
            params.append(before)
            clauses.append(f"seq < ${len(params)}")
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = (
            f"SELECT {REMEDIATION_COLUMNS} FROM remediations {where}"
            f" ORDER BY seq DESC LIMIT ${len(params) + 1}"
        )

        async def query(conn: asyncpg.Connection) -> RemediationPage:
            rows = await conn.fetch(sql, *params, limit + 1)
            kept = rows[:limit]
            cursors = [str(row["seq"]) for row in kept]
            return RemediationPage(
                items=[remediation(row) for row in kept],
                next_cursor=cursors[-1] if len(rows) > limit else None,
                item_cursors=cursors,
            )

        return await self._db.read("list remediations", query)

    async def get_remediation(self, remediation_id: str) -> Remediation | None:
        async def query(conn: asyncpg.Connection) -> Remediation | None:
            # One snapshot for the row and its steps.
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                row = await conn.fetchrow(
                    f"SELECT {WITH_DECISION} FROM remediations WHERE id = $1", remediation_id
                )
                if row is None:
                    return None
                (found,) = await full_remediations(conn, [row])
                return found

        return await self._db.read("get remediation", query)

    async def approve_remediation(
        self,
        remediation_id: str,
        *,
        by: str,
        at: datetime,
        roles: Sequence[str] = (),
        comment: str | None = None,
        outbox: Sequence[OutboxMessage] = (),
    ) -> bool:
        async def write(conn: asyncpg.Connection) -> bool:
            status = await conn.fetchval(
                "SELECT status FROM remediations WHERE id = $1 FOR UPDATE", remediation_id
            )
            if status != RemediationStatus.AWAITING_APPROVAL.value:
                return False
            check_transition(remediation_id, RemediationStatus(status), RemediationStatus.PLANNED)
            await conn.execute(
                "UPDATE remediations SET status = 'planned', approved_by = $2,"
                " approved_at = $3, approved_as = $4, approval_comment = $5, updated_at = $3"
                " WHERE id = $1",
                remediation_id,
                pg_text(by),
                at,
                list(roles) if roles else None,
                pg_text(comment),
            )
            if outbox:
                await conn.execute(INSERT_OUTBOX, *outbox_params(outbox))
            return True

        return await self._db.write("approve remediation", write)

    async def record_analysis(self, remediation_id: str) -> Analysis | None:
        async def query(conn: asyncpg.Connection) -> Analysis | None:
            return await _latest_analysis(conn, remediation_id)

        return await self._db.read("read record analysis", query)

    async def edit_record_analysis(
        self, remediation_id: str, *, changes: Mapping[str, Any], by: str, at: datetime
    ) -> Analysis | None:
        async def write(conn: asyncpg.Connection) -> Analysis | None:
            # The row lock orders concurrent edits: each applies to the one before it.
            found = await conn.fetchval(
                "SELECT 1 FROM remediations WHERE id = $1 FOR UPDATE", remediation_id
            )
            if found is None:
                return None
            edited = edited_analysis(
                await _latest_analysis(conn, remediation_id), dict(changes), by=by, at=at
            )
            await conn.execute(
                "INSERT INTO record_analysis (remediation_id, root_cause, improvements,"
                " lessons, edited_by, edited_at) VALUES ($1, $2, $3, $4, $5, $6)",
                remediation_id, pg_text(edited.root_cause),
                [pg_text(i) for i in edited.improvements], [pg_text(i) for i in edited.lessons],
                pg_text(by), at,
            )  # fmt: skip
            return edited

        return await self._db.write("edit record analysis", write)


async def _latest_analysis(conn: asyncpg.Connection, remediation_id: str) -> Analysis | None:
    row = await conn.fetchrow(
        "SELECT root_cause, improvements, lessons, edited_by, edited_at FROM record_analysis"
        " WHERE remediation_id = $1 ORDER BY seq DESC LIMIT 1",
        remediation_id,
    )
    if row is None:
        return None
    return Analysis(
        root_cause=row["root_cause"],
        improvements=tuple(row["improvements"]),
        lessons=tuple(row["lessons"]),
        edited_by=row["edited_by"],
        edited_at=row["edited_at"],
    )
