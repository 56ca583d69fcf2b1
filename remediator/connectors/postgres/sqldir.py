"""Migrations as a directory of ``NNN_name.up.sql`` / ``NNN_name.down.sql`` files.

State lives in a table (``schema_migrations`` by default, optionally schema-qualified)::

    CREATE TABLE schema_migrations (
        version    text PRIMARY KEY,                    -- "002_add_users_table"
        applied_at timestamptz NOT NULL DEFAULT now()
    );

A Rails-like table with ``version`` only is accepted too, and rows holding just the
number (``"002"``) match the file ``002_*.sql``. Order is by the number, not by
``applied_at``.

Each down script runs in its own transaction together with the deletion of its row,
so a failing script leaves the database as it was. Scripts PostgreSQL cannot run in a
transaction (``CREATE INDEX CONCURRENTLY``, ``VACUUM``, their own ``BEGIN``/``COMMIT``,
or marked ``-- remediator: no-transaction``) are refused unless the runner is built with
``allow_non_transactional=True``; then they run statement by statement and the row is
deleted after the last one.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from pydantic import SecretStr

from remediator.connectors.postgres.dsn import close_quietly, connect
from remediator.connectors.postgres.errors import (
    MigrationFailed,
    MigrationRetryable,
    NonTransactionalMigration,
    is_temporary_sqlstate,
    map_exception,
    sqlstate_of,
)
from remediator.connectors.postgres.model import MigrationStatus, RevertResult
from remediator.connectors.postgres.sqlscript import ScriptInfo, ScriptSyntaxError, analyse
from remediator.domain.errors import ConfigError, PermanentError

__all__ = ["Migration", "SqlDirRunner", "discover", "parse_table_name"]

_FILE = re.compile(r"^(?P<number>\d+)_(?P<name>[A-Za-z0-9_-]+)\.(?P<dir>up|down)\.sql$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


@dataclass(frozen=True, slots=True, kw_only=True)
class Migration:
    number: int
    version: str  # "002_add_users_table"
    up: Path | None
    down: Path | None


def discover(directory: Path) -> list[Migration]:
    """The directory's migrations by number; two files with one number is an error."""
    if not directory.is_dir():
        raise ConfigError(f"migrations directory {directory} does not exist")
    versions: dict[int, str] = {}
    files: dict[tuple[int, str], Path] = {}
    for path in sorted(directory.iterdir()):
        match = _FILE.match(path.name)
        if not match:
            continue
        number = int(match["number"])
        version = f"{match['number']}_{match['name']}"
        seen = versions.setdefault(number, version)
        if seen != version:
            raise ConfigError(f"{directory}: migrations {seen} and {version} share number {number}")
        files[(number, match["dir"])] = path
    return [
        Migration(
            number=number,
            version=version,
            up=files.get((number, "up")),
            down=files.get((number, "down")),
        )
        for number, version in sorted(versions.items())
    ]


def parse_table_name(name: str) -> tuple[str | None, str]:
    """``"schema_migrations"`` or ``"app.schema_migrations"``; plain identifiers only."""
    parts = name.split(".")
    if len(parts) > 2 or not all(_IDENT.match(p) for p in parts):
        raise ConfigError(f"migrations table {name!r} must be [schema.]identifier")
    return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _analysed(script: str, *, name: str, migration: str) -> ScriptInfo:
    """The script's statements and needs; a script PostgreSQL cannot parse is refused
    before anything runs, naming the file."""
    try:
        return analyse(script)
    except ScriptSyntaxError as exc:
        raise MigrationFailed(f"{name}: {exc}", migration=migration) from exc


def _line_of(script: str, position: object) -> str:
    # asyncpg reports the server's 1-based character offset into the query.
    if isinstance(position, str) and position.isdigit():
        return f" (line {script.count(chr(10), 0, int(position)) + 1})"
    return ""


def _state_error(
    exc: Exception, *, table: str, reverted: tuple[str, ...]
) -> MigrationFailed | MigrationRetryable:
    code = sqlstate_of(exc)
    message = f"migration state in {table}: {exc}"
    if code is None or is_temporary_sqlstate(code):  # no SQLSTATE: connection trouble
        return MigrationRetryable(message, migration=None, reverted=reverted, sqlstate=code)
    return MigrationFailed(message, migration=None, reverted=reverted, sqlstate=code)


@dataclass(frozen=True, slots=True)
class _Applied:
    number: int
    row: str  # the exact value in the table
    migration: Migration | None

    @property
    def version(self) -> str:
        return self.migration.version if self.migration else self.row


class SqlDirRunner:
    """The SQL-directory runner for one service's database."""

    kind = "sqldir"

    def __init__(
        self,
        *,
        dsn: SecretStr,
        directory: Path,
        table: str = "schema_migrations",
        allow_non_transactional: bool = False,
        lock_timeout_s: float | None = 10.0,
        statement_timeout_s: float | None = None,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self._dsn = dsn
        self.directory = directory
        self._schema, self._table = parse_table_name(table)
        self.table = table
        self.allow_non_transactional = allow_non_transactional
        # A down script waiting forever behind the application's locks is worse than
        # failing (temporarily) and being retried.
        self.lock_timeout_s = lock_timeout_s
        self.statement_timeout_s = statement_timeout_s
        self.connect_timeout_s = connect_timeout_s

    def __repr__(self) -> str:
        return f"SqlDirRunner(directory={self.directory!s}, table={self.table})"

    @property
    def _qualified(self) -> str:
        t = _quote(self._table)
        return f"{_quote(self._schema)}.{t}" if self._schema else t

    async def _connect(self, what: str) -> asyncpg.Connection:
        return await connect(self._dsn, what=what, timeout_s=self.connect_timeout_s)

    async def _columns(self, conn: asyncpg.Connection) -> set[str] | None:
        """The table's columns, or None when it does not exist yet."""
        oid = await conn.fetchval("SELECT to_regclass($1)::oid", self._qualified)
        if oid is None:
            return None
        rows = await conn.fetch(
            "SELECT attname FROM pg_attribute WHERE attrelid = $1 AND attnum > 0"
            " AND NOT attisdropped",
            oid,
        )
        return {str(r["attname"]) for r in rows}

    async def _read(
        self, conn: asyncpg.Connection
    ) -> tuple[list[Migration], list[_Applied], set[str] | None]:
        migrations = discover(self.directory)
        columns = await self._columns(conn)
        if columns is None:
            return migrations, [], None
        if "version" not in columns:
            raise ConfigError(f"migrations table {self.table} has no 'version' column")
        rows = [str(r[0]) for r in await conn.fetch(f"SELECT version FROM {self._qualified}")]
        by_key: dict[str, Migration] = {}
        for m in migrations:
            by_key[m.version] = m
            by_key.setdefault(m.version.split("_", 1)[0], m)
        applied: list[_Applied] = []
        for row in rows:
            mig = by_key.get(row)
            digits = re.match(r"\d+", row)
            number = mig.number if mig else int(digits.group(0)) if digits else -1
            applied.append(_Applied(number=number, row=row, migration=mig))
        applied.sort(key=lambda a: (a.number, a.row))
        return migrations, applied, columns

    @staticmethod
    def _status(migrations: list[Migration], applied: list[_Applied]) -> MigrationStatus:
        done = {a.migration.version for a in applied if a.migration}
        return MigrationStatus(
            kind="sqldir",
            applied=tuple(a.version for a in applied),
            pending=tuple(m.version for m in migrations if m.version not in done),
            unknown=tuple(a.row for a in applied if a.migration is None),
        )

    async def status(self) -> MigrationStatus:
        conn = await self._connect("migration status")
        try:
            migrations, applied, _ = await self._read(conn)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise map_exception(exc, what=f"migration status in {self.table}") from exc
        finally:
            await close_quietly(conn)
        return self._status(migrations, applied)

    # -- reverting ------------------------------------------------------------------

    async def revert_last(self) -> RevertResult:
        return await self._revert(target=None, last=True)

    async def revert_to(self, version: str) -> RevertResult:
        return await self._revert(target=version, last=False)

    async def _revert(self, *, target: str | None, last: bool) -> RevertResult:
        t0 = time.monotonic()
        conn = await self._connect("migration revert")
        done: list[str] = []
        without_tx: list[str] = []
        try:
            migrations, applied, _ = await self._read(conn)
            status = self._status(migrations, applied)
            if last:
                if not applied:
                    raise PermanentError(f"no applied migration to revert in {self.table}")
                steps = [applied[-1]]
            else:
                assert target is not None
                try:
                    keep = status.find(target)
                except LookupError as exc:
                    raise PermanentError(f"revert to {target}: {exc}") from exc
                if keep is not None and keep not in status.applied:
                    raise PermanentError(f"revert to {target}: {keep} is not applied")
                cut = status.applied.index(keep) + 1 if keep is not None else 0
                steps = list(reversed(applied[cut:]))
            # Check every step before touching anything: a missing file or a refused
            # non-transactional script must not stop a multi-step revert half-way.
            plans = [(step, self._plan(step)) for step in steps]
            for step, (script, transactional) in plans:
                await self._revert_one(conn, step, script, transactional, done=tuple(done))
                done.append(step.version)
                if not transactional:
                    without_tx.append(step.version)
            _, after, _ = await self._read(conn)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            # Only reading state gets here: each step maps its own errors.
            raise _state_error(exc, table=self.table, reverted=tuple(done)) from exc
        finally:
            await close_quietly(conn)
        return RevertResult(
            reverted=tuple(done),
            current=after[-1].version if after else None,
            duration_s=time.monotonic() - t0,
            without_transaction=tuple(without_tx),
        )

    def _plan(self, step: _Applied) -> tuple[str, bool]:
        """(down script text, runs in a transaction) or an error naming the file."""
        if step.migration is None:
            raise MigrationFailed(
                f"applied migration {step.row} has no files in {self.directory}",
                migration=step.row,
            )
        down = step.migration.down
        if down is None:
            raise MigrationFailed(
                f"{step.migration.version}: no {step.migration.version}.down.sql in "
                f"{self.directory}",
                migration=step.migration.version,
            )
        script = down.read_text(encoding="utf-8")
        info = _analysed(script, name=down.name, migration=step.migration.version)
        if info.transactional:
            return script, True
        reasons = info.non_transactional or ("manages its own transactions",)
        if not self.allow_non_transactional:
            raise NonTransactionalMigration(
                f"{down.name} cannot run in a transaction ({', '.join(reasons)}); "
                "a failure would leave it half-done: allow non-transactional reverts "
                "for this service to run it anyway",
                migration=step.migration.version,
                reasons=reasons,
            )
        return script, False

    async def _settings(self, conn: asyncpg.Connection, *, local: bool) -> None:
        for name, value in (
            ("lock_timeout", self.lock_timeout_s),
            ("statement_timeout", self.statement_timeout_s),
        ):
            if value is not None:
                await conn.execute(
                    "SELECT set_config($1, $2, $3)", name, f"{int(value * 1000)}ms", local
                )

    async def _revert_one(
        self,
        conn: asyncpg.Connection,
        step: _Applied,
        script: str,
        transactional: bool,
        *,
        done: tuple[str, ...],
    ) -> None:
        assert step.migration is not None and step.migration.down is not None
        name = step.migration.down.name
        delete = f"DELETE FROM {self._qualified} WHERE version = $1"
        try:
            if transactional:
                async with conn.transaction():
                    await self._settings(conn, local=True)
                    # Delete first: the row lock makes a concurrent revert of the same
                    # step wait, then find nothing to delete and stop.
                    if await conn.execute(delete, step.row) == "DELETE 0":
                        raise MigrationRetryable(
                            f"{name}: {step.version} was reverted concurrently",
                            migration=step.version,
                            reverted=done,
                        )
                    await conn.execute(script)
            else:
                await self._settings(conn, local=False)
                for statement in analyse(script).statements:
                    await conn.execute(statement)
                await conn.execute(delete, step.row)
        except asyncpg.PostgresError as exc:
            code = sqlstate_of(exc)
            message = f"{name}{_line_of(script, getattr(exc, 'position', None))}: {exc}"
            detail = getattr(exc, "detail", None)
            if detail:
                message += f" ({detail})"
            if not transactional:
                message += " - ran without a transaction: it may be partly applied"
            if is_temporary_sqlstate(code):
                raise MigrationRetryable(
                    message, migration=step.version, reverted=done, sqlstate=code
                ) from exc
            raise MigrationFailed(
                message, migration=step.version, reverted=done, sqlstate=code
            ) from exc
        except (OSError, asyncpg.InterfaceError) as exc:
            raise MigrationRetryable(
                f"{name}: connection lost: {exc}", migration=step.version, reverted=done
            ) from exc

    # -- applying (tests, completeness) ----------------------------------------------

    async def apply(self, *, upto: str | None = None) -> tuple[str, ...]:
        """Apply pending migrations in order, up to and including ``upto``.

        Each up script runs in a transaction with its row's insert; one that cannot
        (and is allowed to run without) is recorded *before* it runs, so a failure
        half-way leaves it applied for ``revert_last`` to undo.
        """
        conn = await self._connect("migration apply")
        applied_now: list[str] = []
        try:
            migrations, applied, columns = await self._read(conn)
            if columns is None:
                await conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {self._qualified} ("
                    " version text PRIMARY KEY,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                )
            status = self._status(migrations, applied)
            try:
                last = status.find(upto) if upto else None
            except LookupError as exc:
                raise PermanentError(f"apply up to {upto}: {exc}") from exc
            if last in status.applied:
                return ()
            # Keep the table's style: numbers only if that is what it holds.
            numbers_only = bool(applied) and all(
                a.migration is not None and a.row != a.migration.version for a in applied
            )
            for mig in migrations:
                if mig.version in status.applied:
                    continue
                if mig.up is None:
                    raise MigrationFailed(f"{mig.version}: no up script", migration=mig.version)
                script = mig.up.read_text(encoding="utf-8")
                info = _analysed(script, name=mig.up.name, migration=mig.version)
                row = mig.version.split("_", 1)[0] if numbers_only else mig.version
                try:
                    if info.transactional:
                        async with conn.transaction():
                            await self._settings(conn, local=True)
                            await conn.execute(script)
                            await conn.execute(
                                f"INSERT INTO {self._qualified} (version) VALUES ($1)", row
                            )
                    elif self.allow_non_transactional:
                        # Recorded first: if it stops half-way, it shows as applied and
                        # its (idempotent) down script can clean up what did run.
                        await conn.execute(
                            f"INSERT INTO {self._qualified} (version) VALUES ($1)", row
                        )
                        for statement in info.statements:
                            await conn.execute(statement)
                    else:
                        raise NonTransactionalMigration(
                            f"{mig.up.name} cannot run in a transaction",
                            migration=mig.version,
                            reasons=info.non_transactional,
                        )
                except asyncpg.PostgresError as exc:
                    pos = _line_of(script, getattr(exc, "position", None))
                    raise MigrationFailed(
                        f"{mig.up.name}{pos}: {exc}",
                        migration=mig.version,
                        sqlstate=sqlstate_of(exc),
                    ) from exc
                applied_now.append(mig.version)
                if mig.version == last:
                    break
        finally:
            await close_quietly(conn)
        return tuple(applied_now)
