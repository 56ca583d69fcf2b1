"""``remediator journal copy``: a SQLite journal's whole history into an empty
PostgreSQL journal, so the daemon continues there exactly where it stopped.

The SQLite file is read with sqlite3 alone, read-only, in one snapshot (a read
transaction): schema versions 8 to 13 are understood, any other is refused (tables
a version does not have yet, such as 10's approval requests, 11's automation levels and
12's record analysis, are copied as empty). The copy
is refused while the source looks in use: a heartbeat younger than a minute (the daemon
beats while it runs), or a commit to the file while the copy ran (then nothing is kept
in the target). Stop the daemon first. Heartbeats and outbox leases are not copied:
claims of the stopped daemon are recovered on PostgreSQL like those of any replica
that stopped beating, and its leased messages are offered again at once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from pydantic import SecretStr

from remediator.domain.errors import PermanentError
from remediator.journal.postgres.database import close_quietly, connect
from remediator.journal.postgres.importer import (
    TABLES,
    Column,
    EngineState,
    Progress,
    import_history,
)
from remediator.journal.postgres.journal import PostgresJournal

SUPPORTED_VERSIONS = frozenset({8, 9, 10, 11, 12, 13})
# Tables of TABLES that older schema versions do not have: the version that added them.
_ADDED_IN = {
    "approval_requests": 10,
    "approval_votes": 10,
    "automation_levels": 11,
    "record_analysis": 12,
}
QUIET_SECONDS = 60.0  # a heartbeat younger than this: the daemon may still run
CHUNK_ROWS = 5000
# The order rows are read in (and so inserted): each table's key.
_ORDER = {
    "signals": "seq",
    "decisions": "signal_seq",
    "remediations": "seq",
    "remediation_steps": "remediation_id, idx",
    "outbox": "seq",
    "slack_messages": "remediation_id",
    "approval_requests": "remediation_id",
    "approval_votes": "remediation_id, principal",
    "automation_levels": "seq",
    "record_analysis": "seq",
}


class SourceInUse(PermanentError):
    """The SQLite journal is (or was, during the copy) written by a running daemon."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Heartbeat:
    instance: str
    at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class CopyReport:
    version: int  # the source's schema version
    counts: dict[str, int]  # rows copied per table, and the decision cursor
    circuit_open: bool


def _parse_utc(text: str) -> datetime:
    return datetime.fromisoformat(text.removesuffix("Z")).replace(tzinfo=UTC)


def _value(column: Column, raw: Any) -> Any:
    if raw is None:
        return None
    if column.type == "timestamptz":
        return _parse_utc(raw)
    if column.type == "boolean":
        return bool(raw)
    if column.type in ("jsonb", "textlist"):
        return orjson.loads(raw)
    if column.type in ("bigint", "integer"):
        return int(raw)
    return str(raw)


class SqliteHistory:
    """A SQLite journal file, opened read-only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._data_version: int | None = None
        self.version = 0

    def __enter__(self) -> SqliteHistory:
        if not self.path.is_file():
            raise PermanentError(f"no SQLite journal at {self.path}")
        try:
            self._conn = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None
            )
            self.version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.Error as exc:
            self.__exit__()
            raise PermanentError(f"{self.path}: cannot be read as SQLite ({exc})") from exc
        if self.version not in SUPPORTED_VERSIONS:
            self.__exit__()
            raise PermanentError(
                f"{self.path}: journal schema version {self.version}; this remediator copies "
                f"versions {', '.join(map(str, sorted(SUPPORTED_VERSIONS)))} (open it once "
                "with this remediator's daemon first, or use the matching release)"
            )
        return self

    def __exit__(self, *_: object) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def conn(self) -> sqlite3.Connection:
        assert self._conn is not None, "not open"
        return self._conn

    def newest_heartbeat(self) -> Heartbeat | None:
        table = "heartbeats" if self.version >= 9 else "heartbeat"
        row = self.conn.execute(
            f"SELECT instance, beat_at FROM {table} ORDER BY beat_at DESC LIMIT 1"
        ).fetchone()
        return None if row is None else Heartbeat(instance=row[0], at=_parse_utc(row[1]))

    def begin_snapshot(self) -> None:
        """From here on, every read sees the file as it is now."""
        self._data_version = self.conn.execute("PRAGMA data_version").fetchone()[0]
        self.conn.execute("BEGIN")
        self.conn.execute("SELECT count(*) FROM signals").fetchone()  # the snapshot starts

    def end_snapshot(self) -> bool:
        """End the snapshot; False when another connection committed since it began."""
        self.conn.execute("COMMIT")
        return bool(self.conn.execute("PRAGMA data_version").fetchone()[0] == self._data_version)

    def has(self, table: str) -> bool:
        return self.version >= _ADDED_IN.get(table, 0)

    def counts(self) -> dict[str, int]:
        return {
            table: self.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            if self.has(table)
            else 0
            for table in TABLES
        }

    def engine_state(self) -> EngineState:
        values = dict(self.conn.execute("SELECT name, value FROM engine_state").fetchall())
        circuit = orjson.loads(values.get("circuit", '{"open": false}'))
        changed_at = circuit.get("changed_at")
        return EngineState(
            decided_seq=int(values.get("decided_seq", "0")),
            circuit_open=bool(circuit.get("open")),
            circuit_reason=circuit.get("reason"),
            circuit_changed_at=_parse_utc(changed_at) if changed_at else None,
            circuit_changed_by=circuit.get("changed_by"),
        )

    def chunks(self, table: str) -> Iterator[list[tuple[Any, ...]]]:
        """The table's rows in TABLES' column order, typed, a chunk at a time."""
        if not self.has(table):
            return
        columns = TABLES[table]
        cursor = self.conn.execute(
            f"SELECT {', '.join(c.name for c in columns)} FROM {table} ORDER BY {_ORDER[table]}"
        )
        while rows := cursor.fetchmany(CHUNK_ROWS):
            try:
                chunk = [tuple(_value(c, raw) for c, raw in zip(columns, row, strict=True))
                         for row in rows]  # fmt: skip
            except (ValueError, orjson.JSONDecodeError) as exc:
                raise PermanentError(
                    f"{self.path}: a row of {table} cannot be read: {exc}"
                ) from exc
            if table == "remediations":
                chunk = [_normalized_remediation(row) for row in chunk]
            yield chunk


_STATUS = [c.name for c in TABLES["remediations"]].index("status")
_FINISHED_AT = [c.name for c in TABLES["remediations"]].index("finished_at")


def _normalized_remediation(row: tuple[Any, ...]) -> tuple[Any, ...]:
    # As the SQLite journal's migration 9 does: a rehearsal finished by an executor
    # running dry used to keep 'running'; the lifecycle records it as a dry run.
    if row[_STATUS] == "running" and row[_FINISHED_AT] is not None:
        return (*row[:_STATUS], "dry-run", *row[_STATUS + 1 :])
    return row


async def copy_journal(
    *,
    source: Path,
    target: SecretStr,
    progress: Progress,
    now: datetime,
    ignore_heartbeat: bool = False,
) -> CopyReport:
    """Copy the SQLite journal at ``source`` into the empty PostgreSQL journal at
    ``target`` (migrated first), or raise without leaving anything in the target."""
    with SqliteHistory(source) as history:
        beat = history.newest_heartbeat()
        if beat is not None and not ignore_heartbeat:
            age = now - beat.at
            if age < timedelta(seconds=QUIET_SECONDS):
                raise SourceInUse(
                    f"{source}: the daemon {beat.instance!r} wrote a heartbeat "
                    f"{max(age.total_seconds(), 0):.0f}s ago: stop it first (every replica), "
                    f"then copy again; --ignore-heartbeat if it is certainly stopped"
                )
        migrating = PostgresJournal(dsn=target, instance="journal-copy", pool_size=2)
        await migrating.open()
        await migrating.close()
        conn = await connect(target, what="journal copy", application_name="remediator copy")
        try:
            history.begin_snapshot()
            totals = history.counts()
            state = history.engine_state()

            async def rows(table: str) -> AsyncIterator[Sequence[tuple[Any, ...]]]:
                for chunk in history.chunks(table):
                    yield chunk

            def unchanged() -> None:
                if not history.end_snapshot():
                    raise SourceInUse(
                        f"{source} changed while it was copied: the daemon is still "
                        "running. Stop it, then copy again (nothing was kept in the target)"
                    )

            copied = await import_history(
                conn, rows=rows, totals=totals, state=state, progress=progress,
                before_commit=unchanged,
            )  # fmt: skip
        finally:
            await close_quietly(conn)
        return CopyReport(version=history.version, counts=copied,
                          circuit_open=state.circuit_open)  # fmt: skip
