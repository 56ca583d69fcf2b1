"""The SQLite journal (the embedded default, one replica): every role of the
``Journal`` port over one database file.

- ``database``: the file's connections: WAL, one writer thread with group commit,
  a reader, deadlines on every call;
- ``schema``: migrations (``migrations/NNNN_*.sql``), applied on open;
- ``rows``: how models are stored (times as ``utc_text``, JSON as TEXT);
- one module per role: ``lifecycle`` (heartbeat), ``signals``, ``decisions``,
  ``circuit``, ``remediations``, ``approvals``, ``execution``, ``outbox``, ``slack_threads``,
  ``automation`` (automation levels, outcomes per service).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from remediator.domain.failpoints import NO_FAILPOINTS, Failpoints
from remediator.journal.sqlite.approvals import SqliteApprovals
from remediator.journal.sqlite.automation import SqliteAutomation
from remediator.journal.sqlite.circuit import SqliteCircuit
from remediator.journal.sqlite.database import (
    BUSY_TIMEOUT_MS,
    DEFAULT_CALL_TIMEOUT_SECONDS,
    SqliteDatabase,
)
from remediator.journal.sqlite.decisions import SqliteDecisions
from remediator.journal.sqlite.execution import SqliteExecutionLog
from remediator.journal.sqlite.lifecycle import MIN_FREE_BYTES, SqliteLifecycle
from remediator.journal.sqlite.outbox import SqliteOutbox
from remediator.journal.sqlite.remediations import SqliteRemediations
from remediator.journal.sqlite.rows import INSERT_SIGNAL
from remediator.journal.sqlite.schema import migrate
from remediator.journal.sqlite.signals import (
    DEFAULT_PRUNE_BATCH_SIZE,
    SqliteSignals,
    insert_signal_batches,
)
from remediator.journal.sqlite.slack_threads import SqliteSlackThreads


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SqliteJournal(
    SqliteLifecycle,
    SqliteSignals,
    SqliteDecisions,
    SqliteCircuit,
    SqliteRemediations,
    SqliteApprovals,
    SqliteExecutionLog,
    SqliteOutbox,
    SqliteSlackThreads,
    SqliteAutomation,
):
    """Every role of the journal over one SQLite file (``ports.Journal``).

    ``instance`` names this process in heartbeats; it must be the executor's
    instance id, which names the claims it holds."""

    def __init__(
        self,
        *,
        path: Path,
        max_batch: int = 5000,
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
        call_timeout_seconds: float = DEFAULT_CALL_TIMEOUT_SECONDS,
        prune_batch_size: int = DEFAULT_PRUNE_BATCH_SIZE,
        min_free_bytes: int = MIN_FREE_BYTES,
        clock: Callable[[], datetime] = _utc_now,
        instance: str | None = None,
        failpoints: Failpoints = NO_FAILPOINTS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.database = SqliteDatabase(
            path=path,
            migrate=migrate,
            commit_batch=insert_signal_batches,
            max_batch=max_batch,
            busy_timeout_ms=busy_timeout_ms,
            call_timeout_seconds=call_timeout_seconds,
            failpoints=failpoints,
            monotonic=monotonic,
        )
        db = self.database
        SqliteLifecycle.__init__(
            self,
            db,
            instance=instance or f"{socket.gethostname()}:{os.getpid()}",
            clock=clock,
            min_free_bytes=min_free_bytes,
        )
        SqliteSignals.__init__(self, db, clock=clock, prune_batch_size=prune_batch_size)


__all__ = [
    "DEFAULT_CALL_TIMEOUT_SECONDS",
    "DEFAULT_PRUNE_BATCH_SIZE",
    "INSERT_SIGNAL",
    "MIN_FREE_BYTES",
    "SqliteDatabase",
    "SqliteJournal",
]
