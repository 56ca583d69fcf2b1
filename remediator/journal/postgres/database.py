"""A pool of connections where every call has a deadline and every failure is ours.

Each call (a read, or a transaction) acquires a connection and finishes within
``call_timeout_seconds`` or fails with TemporaryError: a webhook answers 503 instead of
waiting on an unreachable server. The server enforces the same deadline on its side
(``statement_timeout``), and ends a transaction left idle that long
(``idle_in_transaction_session_timeout``): a replica frozen (SIGSTOP) in the middle of a
transaction cannot hold its locks, such as the intake lock, for longer than that.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

import asyncpg
import orjson
from pydantic import SecretStr

from remediator.domain.errors import RemediatorError, TemporaryError
from remediator.journal.postgres.dsn import redact
from remediator.journal.postgres.errors import (
    BROKEN_CONNECTION,
    RETRY_AT_ONCE,
    journal_error,
    safe_cause,
    sqlstate_of,
)
from remediator.journal.postgres.rows import json_text

log = logging.getLogger(__name__)

T = TypeVar("T")
Work = Callable[[asyncpg.Connection], Awaitable[T]]

CONNECT_TIMEOUT_SECONDS = 10.0
CLOSE_TIMEOUT_SECONDS = 5.0
RACE_RETRIES = 3  # serialization failures and deadlocks retried within one call


async def init_connection(conn: asyncpg.Connection) -> None:
    """JSON columns are jsonb: dicts in, dicts out."""
    await conn.set_type_codec(
        "jsonb", encoder=json_text, decoder=orjson.loads, schema="pg_catalog", format="text"
    )


class Database:
    def __init__(
        self,
        *,
        dsn: SecretStr,
        pool_size: int,
        call_timeout_seconds: float,
        application_name: str = "remediator",
    ) -> None:
        self._dsn = dsn
        self._pool_size = pool_size
        self._call_timeout = call_timeout_seconds
        self._application_name = application_name[:63]
        self._pool: asyncpg.Pool | None = None
        self._refused: str | None = None  # why every call fails until reopened

    def __repr__(self) -> str:
        return f"Database({redact(self._dsn)})"

    @property
    def where(self) -> str:
        """The server as people may see it (password masked)."""
        return redact(self._dsn)

    @property
    def dsn(self) -> SecretStr:
        return self._dsn

    @property
    def is_open(self) -> bool:
        return self._pool is not None

    @property
    def call_timeout(self) -> float:
        return self._call_timeout

    def server_settings(self) -> dict[str, str]:
        deadline_ms = str(max(1000, int(self._call_timeout * 1000)))
        return {
            "application_name": self._application_name,
            "statement_timeout": deadline_ms,
            "idle_in_transaction_session_timeout": deadline_ms,
            "timezone": "UTC",
            # The journal's queries are small and indexed. The planner over-estimates
            # the one-row decision cursor and JIT-compiles the engine's read of undecided
            # signals: 55-127 ms of compiling for 0.2 ms of work on every poll, which
            # tripled alert-to-decision latency (docs/benchmarks.md).
            "jit": "off",
        }

    def refuse(self, reason: str) -> None:
        """Fail every call at once with ``reason`` (the journal cannot recover)."""
        self._refused = reason

    async def open(self) -> None:
        if self._pool is not None:
            return
        self._refused = None
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn.get_secret_value(),
                min_size=1,
                max_size=self._pool_size,
                init=init_connection,
                server_settings=self.server_settings(),
                timeout=CONNECT_TIMEOUT_SECONDS,
                # Connections idle this long are closed: a failover's stale ones go too.
                max_inactive_connection_lifetime=60.0,
            )
        except Exception as exc:  # noqa: BLE001 - every failure is mapped, none swallowed
            error = journal_error(exc, what=f"connect to {self.where}", dsn=self._dsn)
            raise error from safe_cause(exc, self._dsn)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT_SECONDS)
        except (TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            log.warning("journal: closing the connections took too long (%s); cut them", exc)
            pool.terminate()

    async def connect(self, *, what: str) -> asyncpg.Connection:
        """One connection outside the pool, with no deadline (migrations, copies)."""
        return await connect(self._dsn, what=what, application_name=self._application_name)

    async def read(self, what: str, work: Work[T]) -> T:
        return await self._call(what, work, transaction=False)

    async def write(self, what: str, work: Work[T]) -> T:
        """``work`` in one transaction: committed if it returns, rolled back if it raises."""
        return await self._call(what, work, transaction=True)

    async def _call(self, what: str, work: Work[T], *, transaction: bool) -> T:
        pool = self._pool
        if pool is None:
            raise TemporaryError("journal is not open", delay=1.0)
        if self._refused is not None:
            raise TemporaryError(self._refused, delay=1.0)
        try:
            async with asyncio.timeout(self._call_timeout):
                return await self._attempts(pool, work, transaction=transaction)
        except RemediatorError:
            raise
        except TimeoutError as exc:
            raise TemporaryError(
                f"journal {what} took longer than {self._call_timeout:g}s", delay=1.0
            ) from exc
        except Exception as exc:  # noqa: BLE001 - every failure is mapped, none swallowed
            raise journal_error(exc, what=what, dsn=self._dsn) from safe_cause(exc, self._dsn)

    @staticmethod
    async def _attempts(pool: asyncpg.Pool, work: Work[T], *, transaction: bool) -> T:
        attempt = 0
        while True:
            attempt += 1
            try:
                async with pool.acquire() as proxy:
                    # The pool's proxy forwards every Connection method.
                    conn = cast(asyncpg.Connection, proxy)
                    try:
                        if not transaction:
                            return await work(conn)
                        async with conn.transaction():
                            return await work(conn)
                    except BROKEN_CONNECTION:
                        # Cut by the server, or left in a state nobody knows: not given
                        # back to the pool, which opens a new one when needed.
                        conn.terminate()
                        raise
            except asyncpg.PostgresError as exc:
                # Lost a race with another transaction: running it again is what the
                # caller would do anyway.
                if sqlstate_of(exc) not in RETRY_AT_ONCE or attempt >= RACE_RETRIES:
                    raise


async def connect(
    dsn: SecretStr, *, what: str, application_name: str = "remediator"
) -> asyncpg.Connection:
    """One connection of its own, with no deadline (migrations, copies); errors mapped,
    the password in none of them."""
    settings = {"application_name": application_name[:63], "timezone": "UTC"}
    try:
        conn = await asyncpg.connect(
            dsn.get_secret_value(), timeout=CONNECT_TIMEOUT_SECONDS, server_settings=settings
        )
    except Exception as exc:  # noqa: BLE001 - every failure is mapped, none swallowed
        error = journal_error(exc, what=f"{what}: connect to {redact(dsn)}", dsn=dsn)
        raise error from safe_cause(exc, dsn)
    try:
        await init_connection(conn)
    except BaseException:
        conn.terminate()
        raise
    return conn


async def close_quietly(conn: asyncpg.Connection) -> None:
    """Close without raising: a broken connection must not hide the error that broke it."""
    try:
        await asyncio.wait_for(conn.close(), CLOSE_TIMEOUT_SECONDS)
    except (TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        conn.terminate()
