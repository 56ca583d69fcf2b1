"""CircuitStore on SQLite: the breaker's state, one JSON document in engine_state."""

from __future__ import annotations

import sqlite3
from datetime import datetime

import orjson

from remediator.domain.lifecycle import utc_text
from remediator.journal.sqlite.database import Role
from remediator.journal.sqlite.rows import json_text, parse_utc_or_none
from remediator.ports import CircuitRecord


class SqliteCircuit(Role):
    async def circuit(self) -> CircuitRecord:
        return await self._db.read(circuit_record)

    async def set_circuit(
        self, *, open: bool, reason: str | None, at: datetime, by: str | None = None
    ) -> None:
        value = json_text({"open": open, "reason": reason, "changed_at": utc_text(at),
                           "changed_by": by})  # fmt: skip

        def write(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE engine_state SET value = ? WHERE name = 'circuit'", (value,))

        await self._db.write(write)


def circuit_record(conn: sqlite3.Connection) -> CircuitRecord:
    (value,) = conn.execute("SELECT value FROM engine_state WHERE name = 'circuit'").fetchone()
    doc = orjson.loads(value)
    return CircuitRecord(
        open=bool(doc["open"]),
        reason=doc.get("reason"),
        changed_at=parse_utc_or_none(doc.get("changed_at")),
        changed_by=doc.get("changed_by"),
    )
