"""SQLite journal: WAL, one writer thread, group commit.

The durable write sits on the webhook's hot path. One commit per alert (or per
request) would cap intake at the disk's fsync rate, so concurrent writes queue up
and the writer thread commits everything waiting in one transaction. The event
loop never blocks: it awaits a future the writer resolves after COMMIT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import orjson

from remediator.domain.errors import PermanentError, TemporaryError
from remediator.domain.signals import Signal
from remediator.ports import RecordResult, SignalPage

log = logging.getLogger(__name__)

# Short waits for a lock held by another process are absorbed here; past this the
# caller gets TemporaryError (the webhook answers 503 and Alertmanager retries).
BUSY_TIMEOUT_MS = 2000
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def _ts(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).strftime(TIME_FORMAT)


@dataclass(slots=True)
class _Job:
    """Work for the writer thread; ``signals`` jobs are batched into one transaction."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    signals: Sequence[Signal] | None = None
    action: Callable[[sqlite3.Connection], Any] | None = None
    enqueued: float = field(default_factory=time.perf_counter)


_STOP = object()


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller went away (e.g. client disconnected); the write stands
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class SqliteJournal:
    def __init__(
        self, *, path: Path, max_batch: int = 5000, busy_timeout_ms: int = BUSY_TIMEOUT_MS
    ) -> None:
        self._path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._reader: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()
        self.last_batch_size = 0  # observability: alerts in the most recent commit

    # -- lifecycle ---------------------------------------------------------------------
    async def open(self) -> None:
        if self._writer is not None:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        self._writer = threading.Thread(
            target=self._write_loop, args=(loop, ready), name="journal-writer", daemon=True
        )
        self._writer.start()
        try:
            await ready
        except BaseException:
            self._writer.join()
            self._writer = None
            raise
        self._reader = await asyncio.to_thread(self._connect)

    async def close(self) -> None:
        if self._writer is not None:
            self._queue.put(_STOP)
            await asyncio.to_thread(self._writer.join)
            self._writer = None
        if self._reader is not None:
            with self._reader_lock:
                self._reader.close()
            self._reader = None

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._path,
            isolation_level=None,
            check_same_thread=False,
            timeout=self._busy_timeout_ms / 1000,
        )
        return conn

    # -- writer thread -------------------------------------------------------------
    def _write_loop(self, loop: asyncio.AbstractEventLoop, ready: asyncio.Future[None]) -> None:
        try:
            conn = self._connect()
            conn.execute("PRAGMA journal_mode = WAL")
            # FULL: an acknowledged alert survives power loss, not only a crash. Group
            # commit keeps the fsync count low enough that this is affordable.
            conn.execute("PRAGMA synchronous = FULL")
            _migrate(conn)
        except Exception as exc:  # noqa: BLE001 - reported to open()'s caller
            loop.call_soon_threadsafe(
                _settle, ready, None, PermanentError(f"journal {self._path}: {exc}")
            )
            return
        loop.call_soon_threadsafe(_settle, ready, None, None)
        try:
            while True:
                job = self._queue.get()
                if job is _STOP:
                    return
                assert isinstance(job, _Job)
                if job.action is not None:
                    self._run_action(conn, job)
                    continue
                batch = [job]
                pending = len(job.signals or ())
                stop_after = False
                while pending < self._max_batch:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is _STOP:
                        stop_after = True
                        break
                    assert isinstance(nxt, _Job)
                    if nxt.action is not None:
                        self._commit_signals(conn, batch)
                        batch = []
                        pending = 0
                        self._run_action(conn, nxt)
                        continue
                    batch.append(nxt)
                    pending += len(nxt.signals or ())
                if batch:
                    self._commit_signals(conn, batch)
                if stop_after:
                    return
        finally:
            conn.close()

    def _commit_signals(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        outcomes: list[list[RecordResult]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for job in batch:
                    outcomes.append([_insert_signal(conn, s) for s in job.signals or ()])
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            error = TemporaryError(f"journal write failed: {exc}", delay=1.0)
            log.error("journal write of %d request(s) failed: %s", len(batch), exc)
            for job in batch:
                job.loop.call_soon_threadsafe(_settle, job.future, None, error)
            return
        self.last_batch_size = sum(len(job.signals or ()) for job in batch)
        for job, results in zip(batch, outcomes, strict=True):
            job.loop.call_soon_threadsafe(_settle, job.future, results, None)

    @staticmethod
    def _run_action(conn: sqlite3.Connection, job: _Job) -> None:
        assert job.action is not None
        try:
            result = job.action(conn)
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            job.loop.call_soon_threadsafe(
                _settle, job.future, None, TemporaryError(f"journal: {exc}", delay=1.0)
            )
            return
        job.loop.call_soon_threadsafe(_settle, job.future, result, None)

    async def _submit(self, job_factory: Callable[[asyncio.Future[Any]], _Job]) -> Any:
        if self._writer is None:
            raise TemporaryError("journal is not open", delay=1.0)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put(job_factory(future))
        return await future

    # -- port ----------------------------------------------------------------------
    async def record_signals(self, signals: Sequence[Signal]) -> list[RecordResult]:
        if not signals:
            return []
        loop = asyncio.get_running_loop()
        result: list[RecordResult] = await self._submit(
            lambda fut: _Job(loop=loop, future=fut, signals=signals)
        )
        return result

    async def check_writable(self) -> None:
        def probe(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")

        loop = asyncio.get_running_loop()
        await self._submit(lambda fut: _Job(loop=loop, future=fut, action=probe))

    async def prune(self, *, older_than_seconds: float) -> int:
        cutoff = _ts(datetime.now(UTC) - timedelta(seconds=older_than_seconds))

        def delete(conn: sqlite3.Connection) -> int:
            cur = conn.execute("DELETE FROM signals WHERE received_at < ?", (cutoff,))
            return cur.rowcount

        loop = asyncio.get_running_loop()
        deleted: int = await self._submit(lambda fut: _Job(loop=loop, future=fut, action=delete))
        return deleted

    async def list_signals(
        self, *, service: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> SignalPage:
        if limit < 1:
            raise PermanentError("limit must be at least 1")
        before: int | None = None
        if cursor is not None:
            if not cursor.isdigit():
                raise PermanentError(f"cursor {cursor!r} is not one this server issued")
            before = int(cursor)
        return await asyncio.to_thread(self._list_signals, service, limit, before)

    def _list_signals(self, service: str | None, limit: int, before: int | None) -> SignalPage:
        clauses: list[str] = []
        params: list[Any] = []
        if service is not None:
            clauses.append("service = ?")
            params.append(service)
        if before is not None:
            clauses.append("seq < ?")
            params.append(before)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = (
            "SELECT seq, id, source, kind, status, service, namespace, routable, labels,"
            f" annotations, starts_at, ends_at, received_at FROM signals {where}"
            " ORDER BY seq DESC LIMIT ?"
        )
        if self._reader is None:
            raise TemporaryError("journal is not open", delay=1.0)
        try:
            with self._reader_lock:
                rows = self._reader.execute(sql, (*params, limit + 1)).fetchall()
        except sqlite3.Error as exc:
            raise TemporaryError(f"journal read failed: {exc}", delay=1.0) from exc
        items = [_row_to_item(row) for row in rows[:limit]]
        next_cursor = str(rows[limit - 1][0]) if len(rows) > limit else None
        return SignalPage(items=items, next_cursor=next_cursor)


def _insert_signal(conn: sqlite3.Connection, signal: Signal) -> RecordResult:
    cur = conn.execute(
        "INSERT OR IGNORE INTO signals (id, key, source, kind, status, service, namespace,"
        " routable, labels, annotations, starts_at, ends_at, received_at, raw)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            signal.id,
            signal.key,
            signal.source.value,
            signal.kind,
            signal.status.value,
            signal.service,
            signal.namespace,
            int(signal.routable),
            orjson.dumps(signal.labels).decode(),
            orjson.dumps(signal.annotations).decode(),
            _ts(signal.starts_at),
            _ts(signal.ends_at),
            _ts(signal.received_at),
            orjson.dumps(signal.raw).decode(),
        ),
    )
    return RecordResult(signal_id=signal.id, duplicate=cur.rowcount == 0)


def _row_to_item(row: tuple[Any, ...]) -> dict[str, Any]:
    (_, sid, source, kind, status, service, namespace, routable, labels, annotations,
     starts_at, ends_at, received_at) = row  # fmt: skip
    return {
        "id": sid,
        "source": source,
        "kind": kind,
        "status": status,
        "service": service,
        "namespace": namespace,
        "routable": bool(routable),
        "labels": orjson.loads(labels),
        "annotations": orjson.loads(annotations),
        "starts_at": starts_at,
        "ends_at": ends_at,
        "received_at": received_at,
    }


def _migrate(conn: sqlite3.Connection) -> None:
    """Apply migrations/NNNN_*.sql newer than PRAGMA user_version, each atomically."""
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    scripts = sorted(
        (entry for entry in resources.files("remediator.journal").joinpath("migrations").iterdir()
         if entry.name.endswith(".sql")),
        key=lambda entry: entry.name,
    )  # fmt: skip
    for entry in scripts:
        version = int(entry.name.split("_", 1)[0])
        if version <= current:
            continue
        sql = entry.read_text()
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in filter(None, (s.strip() for s in sql.split(";"))):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        log.info("journal schema migrated to version %d (%s)", version, entry.name)
