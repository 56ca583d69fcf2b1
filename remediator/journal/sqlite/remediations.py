"""RemediationStore on SQLite: remediations as people list, read and approve them."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from remediator.domain.lifecycle import Remediation, RemediationStatus, check_transition, utc_text
from remediator.domain.paging import check_limit, parse_cursor
from remediator.domain.record import Analysis, edited_analysis
from remediator.journal.sqlite.database import Role
from remediator.journal.sqlite.rows import (
    REMEDIATION_COLUMNS,
    full_remediation,
    insert_outbox,
    json_text,
    newest_first_where,
    page_of,
    parse_utc,
    remediation,
)
from remediator.ports import OutboxMessage, RemediationPage


def current_status(conn: sqlite3.Connection, remediation_id: str) -> RemediationStatus | None:
    row = conn.execute("SELECT status FROM remediations WHERE id = ?", (remediation_id,)).fetchone()
    return None if row is None else RemediationStatus(row[0])


class SqliteRemediations(Role):
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
        where, params = newest_first_where([("service", service), ("status", status)], before)
        sql = f"SELECT {REMEDIATION_COLUMNS} FROM remediations {where} ORDER BY seq DESC LIMIT ?"

        def query(conn: sqlite3.Connection) -> RemediationPage:
            rows = conn.execute(sql, (*params, limit + 1)).fetchall()
            items, cursors, next_cursor = page_of(rows, limit, remediation)
            return RemediationPage(items=items, next_cursor=next_cursor, item_cursors=cursors)

        return await self._db.read(query)

    async def get_remediation(self, remediation_id: str) -> Remediation | None:
        def query(conn: sqlite3.Connection) -> Remediation | None:
            row = conn.execute(
                f"SELECT {REMEDIATION_COLUMNS} FROM remediations WHERE id = ?", (remediation_id,)
            ).fetchone()
            return None if row is None else full_remediation(conn, row)

        return await self._db.read(query)

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
        stamp = utc_text(at)
        approved_as = json_text(list(roles)) if roles else None
        waiting, runnable = RemediationStatus.AWAITING_APPROVAL, RemediationStatus.PLANNED

        def write(conn: sqlite3.Connection) -> bool:
            if current_status(conn, remediation_id) is not waiting:
                return False
            check_transition(remediation_id, waiting, runnable)
            conn.execute(
                "UPDATE remediations SET status = ?, approved_by = ?, approved_at = ?,"
                " approved_as = ?, approval_comment = ?, updated_at = ? WHERE id = ?",
                (runnable, by, stamp, approved_as, comment, stamp, remediation_id),
            )
            insert_outbox(conn, outbox)
            return True

        approved: bool = await self._db.transaction(write)
        return approved

    async def record_analysis(self, remediation_id: str) -> Analysis | None:
        return await self._db.read(lambda conn: _latest_analysis(conn, remediation_id))

    async def edit_record_analysis(
        self, remediation_id: str, *, changes: Mapping[str, Any], by: str, at: datetime
    ) -> Analysis | None:
        def write(conn: sqlite3.Connection) -> Analysis | None:
            if current_status(conn, remediation_id) is None:
                return None
            edited = edited_analysis(
                _latest_analysis(conn, remediation_id), dict(changes), by=by, at=at
            )
            conn.execute(
                "INSERT INTO record_analysis (remediation_id, root_cause, improvements,"
                " lessons, edited_by, edited_at) VALUES (?, ?, ?, ?, ?, ?)",
                (remediation_id, edited.root_cause, json_text(list(edited.improvements)),
                 json_text(list(edited.lessons)), by, utc_text(at)),
            )  # fmt: skip
            return edited

        result: Analysis | None = await self._db.transaction(write)
        return result


def _latest_analysis(conn: sqlite3.Connection, remediation_id: str) -> Analysis | None:
    row = conn.execute(
        "SELECT root_cause, improvements, lessons, edited_by, edited_at FROM record_analysis"
        " WHERE remediation_id = ? ORDER BY seq DESC LIMIT 1",
        (remediation_id,),
    ).fetchone()
    if row is None:
        return None
    return Analysis(
        root_cause=row[0],
        improvements=tuple(json.loads(row[1])),
        lessons=tuple(json.loads(row[2])),
        edited_by=row[3],
        edited_at=parse_utc(row[4]),
    )
