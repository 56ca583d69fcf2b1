"""CircuitStore: the breaker's one row."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from remediator.journal.postgres.database import Database
from remediator.journal.postgres.rows import pg_text
from remediator.ports import CircuitRecord


class PgCircuitStore:
    _db: Database

    async def circuit(self) -> CircuitRecord:
        async def query(conn: asyncpg.Connection) -> CircuitRecord:
            return circuit_record(
                await conn.fetchrow("SELECT open, reason, changed_at, changed_by FROM circuit")
            )

        return await self._db.read("read circuit", query)

    async def set_circuit(
        self, *, open: bool, reason: str | None, at: datetime, by: str | None = None
    ) -> None:
        async def write(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "UPDATE circuit SET open = $1, reason = $2, changed_at = $3, changed_by = $4",
                open,
                pg_text(reason),
                at,
                by,
            )

        await self._db.write("set circuit", write)


def circuit_record(row: asyncpg.Record | None) -> CircuitRecord:
    assert row is not None  # inserted by the first migration, never deleted
    return CircuitRecord(
        open=row["open"],
        reason=row["reason"],
        changed_at=row["changed_at"],
        changed_by=row["changed_by"],
    )
