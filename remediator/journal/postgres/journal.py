"""``PostgresJournal``: every journal role on one PostgreSQL database several replicas
share (see docs/operations.md, "SQLite or PostgreSQL").

Each role lives in its own module (signals, decisions, circuit, remediations,
approvals, execution, outbox, slack, automation); this class composes them over one
connection pool and one intake writer, and adds the lifecycle: open (connect, migrate),
close, alive, and the heartbeat of ``check_writable``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg
from pydantic import SecretStr

from remediator.domain.errors import RemediatorError, TemporaryError
from remediator.domain.failpoints import NO_FAILPOINTS, Failpoints
from remediator.journal.postgres.approvals import PgApprovalStore
from remediator.journal.postgres.automation import PgAutomation
from remediator.journal.postgres.circuit import PgCircuitStore
from remediator.journal.postgres.database import Database, close_quietly
from remediator.journal.postgres.decisions import PgDecisionStore
from remediator.journal.postgres.errors import journal_error, safe_cause
from remediator.journal.postgres.execution import PgExecutionLog
from remediator.journal.postgres.intake import Intake
from remediator.journal.postgres.migrate import migrate
from remediator.journal.postgres.outbox import PgOutbox
from remediator.journal.postgres.remediations import PgRemediationStore
from remediator.journal.postgres.signals import DEFAULT_PRUNE_BATCH_SIZE, PgSignalStore
from remediator.journal.postgres.slack import PgSlackThreads

log = logging.getLogger(__name__)

DEFAULT_CALL_TIMEOUT_SECONDS = 5.0
DEFAULT_POOL_SIZE = 10
# Connecting and migrating; waits behind another replica's migration too.
OPEN_TIMEOUT_SECONDS = 120.0


def _utc_now() -> datetime:
    return datetime.now(UTC)


class PostgresJournal(
    PgSignalStore,
    PgDecisionStore,
    PgCircuitStore,
    PgRemediationStore,
    PgApprovalStore,
    PgExecutionLog,
    PgOutbox,
    PgSlackThreads,
    PgAutomation,
):
    def __init__(
        self,
        *,
        dsn: SecretStr,
        max_batch: int = 5000,
        pool_size: int = DEFAULT_POOL_SIZE,
        call_timeout_seconds: float = DEFAULT_CALL_TIMEOUT_SECONDS,
        prune_batch_size: int = DEFAULT_PRUNE_BATCH_SIZE,
        open_timeout_seconds: float = OPEN_TIMEOUT_SECONDS,
        clock: Callable[[], datetime] = _utc_now,
        instance: str | None = None,
        failpoints: Failpoints = NO_FAILPOINTS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._instance = instance or f"{socket.gethostname()}:{os.getpid()}"
        self._db = Database(
            dsn=dsn,
            # The intake writer holds one connection; the rest serve everything else.
            pool_size=max(2, pool_size),
            call_timeout_seconds=call_timeout_seconds,
            application_name=f"remediator {self._instance}",
        )
        self._intake = Intake(
            self._db, max_batch=max_batch, failpoints=failpoints, monotonic=monotonic
        )
        self._clock = clock
        self._prune_batch_size = prune_batch_size
        self._open_timeout = open_timeout_seconds

    def __repr__(self) -> str:
        return f"PostgresJournal({self._db.where}, instance={self._instance!r})"

    @property
    def where(self) -> str:
        """The server, password masked (for logs)."""
        return self._db.where

    @property
    def last_batch_size(self) -> int:
        return self._intake.last_batch_size

    # -- lifecycle -------------------------------------------------------------------
    async def open(self) -> None:
        if self._db.is_open:
            return
        try:
            async with asyncio.timeout(self._open_timeout):
                await self._migrate()
                await self._db.open()
        except TimeoutError as exc:
            await self._db.close()
            raise TemporaryError(
                f"journal {self.where}: not open after {self._open_timeout:g}s", delay=5.0
            ) from exc
        except BaseException:
            await self._db.close()
            raise
        self._intake.start()

    async def _migrate(self) -> None:
        conn = await self._db.connect(what="migrate")
        try:
            version = await migrate(conn)
        except RemediatorError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is mapped, none swallowed
            error = journal_error(exc, what=f"migrate {self.where}", dsn=self._db.dsn)
            raise error from safe_cause(exc, self._db.dsn)
        finally:
            await close_quietly(conn)
        log.debug("journal %s at schema version %d", self.where, version)

    async def close(self) -> None:
        await self._intake.stop()
        await self._db.close()

    def alive(self) -> bool:
        """Open, and the intake writer runs and is not stuck. A server that cannot be
        reached for now is not a reason to restart: every call fails with
        TemporaryError (and /readyz with it) until it can be reached again."""
        return self._db.is_open and self._intake.alive()

    async def check_writable(self) -> None:
        beat_at = self._clock()
        instance = self._instance

        async def beat(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "INSERT INTO heartbeats (instance, beat_at) VALUES ($1, $2)"
                " ON CONFLICT (instance) DO UPDATE SET beat_at = excluded.beat_at",
                instance,
                beat_at,
            )

        await self._db.write("heartbeat", beat)
