"""Alembic migrations, run as ``alembic`` subprocesses in the service's migration directory.

remediator never imports the service's migrations: they run in their own interpreter
(``command``, e.g. ``("/srv/app/.venv/bin/alembic",)``) with the working directory set to
``directory``. The database URL is passed in the environment variable ``url_env``
(``REMEDIATOR_DATABASE_URL`` by default), never on the command line; the service's
``env.py`` reads it::

    url = os.environ["REMEDIATOR_DATABASE_URL"]
    engine = create_async_engine(url)     # or create_engine() with a sync driver

(not via ``config.set_main_option``: configparser would read ``%`` in an encoded
password as interpolation). ``driver`` rewrites the scheme for SQLAlchemy, e.g.
``postgresql://`` -> ``postgresql+asyncpg://`` or ``postgresql+psycopg://``.

State is the revision graph from ``alembic history`` (no database; read once per
runner) and the current heads from the version table (``alembic_version``, or
``version_table`` when env.py sets another, schema-qualified if need be) read
directly: one interpreter start per revert instead of several. What a downgrade
reverted is the difference between the states before and after, so it does not depend
on the project's logging configuration. Linear histories are reported exactly; with
branches, ``applied`` follows the current heads' ancestry.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import asyncpg
from pydantic import SecretStr

from remediator.connectors.childenv import child_env
from remediator.connectors.postgres.dsn import close_quietly, connect, password_of
from remediator.connectors.postgres.errors import (
    MigrationFailed,
    MigrationRetryable,
    map_exception,
)
from remediator.connectors.postgres.model import BASE, MigrationStatus, RevertResult
from remediator.connectors.postgres.sqldir import parse_table_name
from remediator.connectors.postgres.tools import ToolResult, run_tool
from remediator.domain.errors import ConfigError, PermanentError

__all__ = ["AlembicRunner", "parse_history"]

DEFAULT_URL_ENV = "REMEDIATOR_DATABASE_URL"
# "0001 -> 0002 (head), add orders"; "<base> -> 0001, create users";
# "(0002, 0003) -> 0004 (head) (mergepoint), merge"
_HISTORY = re.compile(r"^(?P<down>\(.*?\)|<base>|\S+) -> (?P<rev>[^\s,]+)(?P<flags>[^,]*)")
_TEMPORARY = re.compile(
    r"connection refused|could not connect|too many connections|TooManyConnections|"
    r"CannotConnectNow|the database system is starting up|ConnectionDoesNotExist|"
    r"connection was closed|timeout expired|TimeoutError|could not serialize|"
    r"SerializationError|deadlock detected|DeadlockDetected|lock timeout|LockNotAvailable",
    re.IGNORECASE,
)
_TAIL_LINES = 25
# Beyond child_env's common variables: what the service's Python code needs to import.
_PASSED_ENV = frozenset({"PYTHONPATH", "VIRTUAL_ENV"})


def parse_history(text: str) -> tuple[dict[str, tuple[str, ...]], tuple[str, ...]]:
    """({revision: its down revisions}, revisions oldest first) from ``alembic history``."""
    downs: dict[str, tuple[str, ...]] = {}
    order: list[str] = []
    for line in text.splitlines():
        match = _HISTORY.match(line.strip())
        if not match:
            continue
        down = match["down"]
        if down == "<base>":
            parents: tuple[str, ...] = ()
        elif down.startswith("("):
            parents = tuple(p.strip() for p in down.strip("()").split(",") if p.strip())
        else:
            parents = (down,)
        downs[match["rev"]] = parents
        order.append(match["rev"])
    order.reverse()  # alembic prints newest first
    return downs, tuple(order)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _ancestry(heads: Sequence[str], downs: Mapping[str, tuple[str, ...]]) -> list[str]:
    """Every revision reachable from ``heads``, oldest first (parents before children)."""
    seen: set[str] = set()
    ordered: list[str] = []

    def visit(rev: str) -> None:
        if rev in seen:
            return
        seen.add(rev)
        for parent in downs.get(rev, ()):
            visit(parent)
        ordered.append(rev)

    for head in heads:
        visit(head)
    return ordered


class AlembicRunner:
    kind = "alembic"

    def __init__(
        self,
        *,
        dsn: SecretStr,
        directory: Path,
        config: str = "alembic.ini",
        command: Sequence[str] = ("alembic",),
        url_env: str = DEFAULT_URL_ENV,
        driver: str | None = None,
        env: Mapping[str, str] | None = None,
        version_table: str = "alembic_version",
        timeout_s: float = 1800.0,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self._dsn = dsn
        self.directory = directory
        self.config = config
        self.command = tuple(command)
        self.url_env = url_env
        self.driver = driver
        # The service's code runs there: hand it what an interpreter needs, not
        # remediator's own environment (tokens, its settings).
        self._env = child_env(env, passed=_PASSED_ENV)
        schema, table = parse_table_name(version_table)
        self._version_table = f"{_quote(schema)}.{_quote(table)}" if schema else _quote(table)
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._history: tuple[dict[str, tuple[str, ...]], tuple[str, ...]] | None = None

    def __repr__(self) -> str:
        return f"AlembicRunner(directory={self.directory!s}, command={self.command})"

    def _url(self) -> str:
        raw = self._dsn.get_secret_value()
        if not self.driver:
            return raw
        _, sep, rest = raw.partition("://")
        return f"postgresql+{self.driver}://{rest}" if sep else raw

    async def _alembic(self, *args: str, check: bool = True) -> ToolResult:
        if not (self.directory / self.config).is_file():
            raise ConfigError(f"no Alembic config {self.config} in {self.directory}")
        env = dict(self._env)
        env[self.url_env] = self._url()
        return await run_tool(
            [*self.command, "-c", self.config, *args],
            env=env,
            cwd=self.directory,
            what=f"alembic {' '.join(args)} in {self.directory}",
            secret=password_of(self._dsn),
            timeout_s=self.timeout_s,
            check=check,
        )

    async def _graph(self) -> tuple[dict[str, tuple[str, ...]], tuple[str, ...]]:
        # The scripts do not change under a running runner: one `alembic history`.
        if self._history is None:
            self._history = parse_history((await self._alembic("history")).stdout)
        return self._history

    async def _heads(self) -> tuple[str, ...]:
        conn = await connect(self._dsn, what="alembic state", timeout_s=self.connect_timeout_s)
        try:
            if await conn.fetchval("SELECT to_regclass($1)", self._version_table) is None:
                return ()  # never upgraded: at base
            rows = await conn.fetch(f"SELECT version_num FROM {self._version_table}")
        except asyncpg.PostgresError as exc:
            raise map_exception(exc, what=f"alembic state in {self._version_table}") from exc
        finally:
            await close_quietly(conn)
        return tuple(str(r[0]) for r in rows)

    async def status(self) -> MigrationStatus:
        downs, order = await self._graph()
        heads = await self._heads()
        unknown = tuple(h for h in heads if h not in downs)
        applied = _ancestry([h for h in heads if h in downs], downs)
        done = set(applied)
        return MigrationStatus(
            kind="alembic",
            applied=tuple(applied),
            pending=tuple(r for r in order if r not in done),
            unknown=unknown,
        )

    async def upgrade(self, revision: str = "head") -> None:
        """``alembic upgrade`` (tests, completeness: deploys are the service's job)."""
        await self._alembic("upgrade", revision)

    async def revert_last(self) -> RevertResult:
        return await self._downgrade("-1")

    async def revert_to(self, version: str) -> RevertResult:
        return await self._downgrade(version)

    async def _downgrade(self, target: str) -> RevertResult:
        t0 = time.monotonic()
        before = await self.status()
        if target == "-1" and not before.applied:
            raise PermanentError(f"no applied Alembic revision to revert in {self.directory}")
        if target not in ("-1", BASE) and target not in before.applied:
            raise PermanentError(
                f"revert to {target}: not an applied revision "
                f"(applied: {', '.join(before.applied) or 'none'})"
            )
        result = await self._alembic("downgrade", target, check=False)
        after = await self.status()
        reverted = tuple(v for v in before.after(None) if v not in after.applied)
        if result.returncode != 0:
            output = (result.stderr.strip() or result.stdout.strip()).splitlines()
            message = (
                f"alembic downgrade {target} in {self.directory}: exit {result.returncode}: "
                + "\n".join(output[-_TAIL_LINES:])
            )
            failed = next((v for v in before.after(None) if v not in reverted), None)
            if _TEMPORARY.search("\n".join(output)):
                raise MigrationRetryable(message, migration=failed, reverted=reverted)
            raise MigrationFailed(message, migration=failed, reverted=reverted)
        return RevertResult(
            reverted=reverted,
            current=after.current,
            duration_s=time.monotonic() - t0,
            output="\n".join((result.stderr.strip().splitlines())[-_TAIL_LINES:]),
        )
