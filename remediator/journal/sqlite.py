"""SQLite journal: WAL, one writer thread, group commit.

The durable write sits on the webhook's hot path. One commit per alert (or per
request) would cap intake at the disk's fsync rate, so concurrent writes queue up
and the writer thread commits everything waiting in one transaction. The event
loop never blocks: it awaits a future the writer resolves after COMMIT.

Every call has a deadline (``call_timeout_seconds``): past it the caller gets
``TemporaryError`` (a webhook answers 503) instead of waiting on a stuck disk. The
writer settles every job whatever it raises; should the thread itself die, every
queued and later call fails at once and ``alive()`` turns false, so /healthz fails
and Kubernetes restarts the pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import queue
import socket
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import orjson

from remediator.domain.errors import PermanentError, RemediatorError, TemporaryError
from remediator.domain.failpoints import NO_FAILPOINTS, Failpoints
from remediator.domain.notices import SlackMessageRef
from remediator.domain.paging import check_limit, parse_cursor
from remediator.domain.signals import Signal, Source, Status
from remediator.ports import (
    CircuitRecord,
    DecisionRecord,
    OutboxMessage,
    Page,
    PendingMessage,
    RecordResult,
    RemediationSummary,
    SignalPage,
    StoredSignal,
)

log = logging.getLogger(__name__)

# Short waits for a lock held by another process are absorbed here; past this the
# caller gets TemporaryError (the webhook answers 503 and Alertmanager retries).
BUSY_TIMEOUT_MS = 2000
HUNG_AFTER_DEADLINES = 12  # with the default 5 s journal deadline: hung after 60 s
DEFAULT_CALL_TIMEOUT_SECONDS = 5.0
DEFAULT_PRUNE_BATCH_SIZE = 5000
# A prune batch holds the writer: webhooks wait behind it. Batches adapt to about this
# long (commit included) and examine rows this many at a time.
PRUNE_BATCH_TARGET_SECONDS = 0.03
PRUNE_CHUNK_ROWS = 200
# Below this much free space the readiness probe fails even if its small write
# would still fit: WAL space left over from earlier commits lets a heartbeat succeed
# on a full disk while a webhook's larger batch cannot.
MIN_FREE_BYTES = 1024 * 1024
# SQLite VM steps between checks of a read's deadline: each check takes the GIL, so
# not too often.
_PROGRESS_STEPS = 50_000
_ZERO = timedelta(0)


def _ts(value: datetime | None) -> str | None:
    return None if value is None else _utc_text(value)


def _utc_text(value: datetime) -> str:
    """Fixed-width UTC text ('2026-11-27T10:00:00.000000Z'): sorts like the instants."""
    if value.utcoffset() != _ZERO:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class _Job:
    """Work for the writer thread; ``signals`` jobs are batched into one transaction."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    signals: Sequence[Signal] | None = None
    action: Callable[[sqlite3.Connection], Any] | None = None

    @property
    def abandoned(self) -> bool:
        """The caller stopped waiting (deadline, disconnect): don't start its write."""
        return self.future.done()

    def resolve(self, result: Any, error: BaseException | None = None) -> None:
        # The caller's loop may be closed already (e.g. a CLI run ended); the writer
        # must not die of that.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(_settle, self.future, result, error)


_STOP = object()


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller stopped waiting (deadline, disconnect); the write stands
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


# SQLite errors caused by what a job asked for, not by the storage: retrying the same
# job cannot help, and the other requests sharing its commit are not to blame.
_INPUT_ERRORS = (
    sqlite3.IntegrityError,
    sqlite3.DataError,
    sqlite3.ProgrammingError,
    sqlite3.InterfaceError,
    sqlite3.NotSupportedError,
)


def _storage_fault(exc: BaseException) -> bool:
    """Locked, busy, disk full, read-only, I/O error: the storage may recover."""
    return isinstance(exc, sqlite3.Error) and not isinstance(exc, _INPUT_ERRORS)


def _job_error(exc: Exception) -> RemediatorError:
    """What the caller of a failed job gets; our own errors pass through unchanged."""
    if isinstance(exc, RemediatorError):
        return exc
    error: RemediatorError
    if _storage_fault(exc):
        error = TemporaryError(f"journal: {exc}", delay=1.0)
    else:
        # A defect in this job (or its input), not in the storage: the writer goes on
        # with the next job. Logged here, once, with the type and the trace.
        log.error("journal job failed with %s: %s", type(exc).__name__, exc, exc_info=exc)
        if isinstance(exc, MemoryError | OSError):
            error = TemporaryError(f"journal: {type(exc).__name__}: {exc}", delay=1.0)
        else:
            error = PermanentError(f"journal: internal error ({type(exc).__name__}: {exc})")
    error.__cause__ = exc  # as `raise error from exc` would, for whoever logs it
    return error


def _rollback(conn: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):
        if conn.in_transaction:
            conn.execute("ROLLBACK")


class SqliteJournal:
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
        self._path = path
        self._failpoints = failpoints
        self._monotonic = monotonic
        # A writer busy with one job for this long is hung (a stuck fsync, a dead disk):
        # alive() turns False so the liveness probe restarts the pod.
        self._hung_after = HUNG_AFTER_DEADLINES * call_timeout_seconds
        self._working_since: float | None = None  # monotonic; set by the writer thread
        self._busy_timeout_ms = busy_timeout_ms
        self._max_batch = max_batch
        self._call_timeout = call_timeout_seconds
        self._prune_batch_size = prune_batch_size
        self._min_free_bytes = min_free_bytes
        self._clock = clock
        self._instance = instance or f"{socket.gethostname()}:{os.getpid()}"
        self._queue: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        # Held while a job is queued and while the writer stops taking jobs, so no job
        # slips into the queue after the writer's last look at it.
        self._accepting = threading.Lock()
        self._stopped: str | None = None  # why the writer takes no more jobs
        self._reader: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()
        self._read_deadline: float | None = None  # monotonic; guarded by _reader_lock
        self.last_batch_size = 0  # observability: alerts in the most recent commit

    # -- lifecycle ---------------------------------------------------------------------
    async def open(self) -> None:
        if self._writer is not None:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        # A fresh queue: a writer that died may have left a stop request behind.
        self._queue = queue.SimpleQueue()
        self._stopped = None
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
        self._reader = await asyncio.to_thread(self._connect_reader)

    async def close(self) -> None:
        if self._writer is not None:
            self._queue.put(_STOP)
            await asyncio.to_thread(self._writer.join)
            self._writer = None
        if self._reader is not None:
            # In a thread: a read still running holds the lock (at most until its deadline).
            await asyncio.to_thread(self._close_reader)

    def _close_reader(self) -> None:
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
            self._reader = None

    def alive(self) -> bool:
        writer = self._writer
        if writer is None or not writer.is_alive() or self._stopped is not None:
            return False
        since = self._working_since
        return since is None or self._monotonic() - since <= self._hung_after

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._path,
            isolation_level=None,
            check_same_thread=False,
            timeout=self._busy_timeout_ms / 1000,
        )
        return conn

    def _connect_reader(self) -> sqlite3.Connection:
        conn = self._connect()
        # A read past its deadline is interrupted ("interrupted" -> TemporaryError), so
        # abandoned reads don't pile up in the thread pool behind the reader lock.
        conn.set_progress_handler(self._read_overdue, _PROGRESS_STEPS)
        return conn

    def _read_overdue(self) -> int:
        deadline = self._read_deadline
        return int(deadline is not None and time.monotonic() > deadline)

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
        in_hand: list[_Job] = []
        reason = "journal is closed"
        try:
            self._serve(conn, in_hand)
        except BaseException as exc:  # the thread's last word: settle every caller, then end
            reason = f"journal writer stopped ({type(exc).__name__}: {exc})"
            log.critical(
                "%s: every journal call fails until the daemon restarts", reason, exc_info=exc
            )
        finally:
            self._stop_accepting(reason, in_hand)
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def _stop_accepting(self, reason: str, in_hand: list[_Job]) -> None:
        """Refuse new jobs, then fail every job held or queued: no caller waits forever."""
        with self._accepting:
            self._stopped = reason
        error = TemporaryError(reason, delay=1.0)
        for job in in_hand:
            job.resolve(None, error)
        while True:
            try:
                leftover = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(leftover, _Job):
                leftover.resolve(None, error)

    def _serve(self, conn: sqlite3.Connection, in_hand: list[_Job]) -> None:
        """Take jobs until _STOP; ``in_hand`` holds those not yet settled."""
        while True:
            job = self._queue.get()
            if job is _STOP:
                return
            assert isinstance(job, _Job)
            self._working_since = self._monotonic()
            try:
                stop = self._serve_one(conn, job, in_hand)
            finally:
                self._working_since = None
            if stop:
                return

    def _serve_one(self, conn: sqlite3.Connection, job: _Job, in_hand: list[_Job]) -> bool:
        """Run ``job``, batching the signal writes queued behind it; True on _STOP."""
        in_hand[:] = [job]
        # A bug outside any one job; keyed by the first signal's service so a test
        # can let the daemon start first.
        self._failpoints.hit("journal.writer", job.signals[0].service if job.signals else None)
        if job.action is not None:
            self._run_action(conn, job)
            in_hand.clear()
            return False
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
                self._commit_signals(conn, in_hand)
                in_hand[:] = [nxt]
                self._run_action(conn, nxt)
                in_hand.clear()
                pending = 0
                continue
            in_hand.append(nxt)
            pending += len(nxt.signals or ())
        if in_hand:
            self._commit_signals(conn, in_hand)
        in_hand.clear()
        return stop_after

    def _commit_signals(self, conn: sqlite3.Connection, jobs: list[_Job]) -> None:
        batch = [job for job in jobs if not job.abandoned]
        if not batch:
            return
        try:
            fresh = self._insert_signals(conn, batch)
        except Exception as exc:  # noqa: BLE001 - settled below, whatever it is
            if _storage_fault(exc):
                # Disk full, locked, read-only: every request of the batch may retry.
                error = TemporaryError(f"journal write failed: {exc}", delay=1.0)
                error.__cause__ = exc
                log.error("journal write of %d request(s) failed: %s", len(batch), exc)
                for job in batch:
                    job.resolve(None, error)
                return
            if len(batch) > 1:
                # One request's bad input must not fail the others sharing its commit.
                for job in batch:
                    self._commit_signals(conn, [job])
                return
            batch[0].resolve(None, _job_error(exc))
            return
        self.last_batch_size = sum(len(job.signals or ()) for job in batch)
        # The first occurrence of a fresh id in this batch is the one stored; every
        # other occurrence (earlier commit or same batch) is a duplicate.
        claimed: set[str] = set()
        for job in batch:
            results = []
            for signal in job.signals or ():
                new = signal.id in fresh and signal.id not in claimed
                if new:
                    claimed.add(signal.id)
                results.append(RecordResult(signal_id=signal.id, duplicate=not new))
            job.resolve(results)

    @staticmethod
    def _insert_signals(conn: sqlite3.Connection, batch: list[_Job]) -> set[str]:
        """Store the batch's new signals in one transaction; return their ids."""
        signals = [s for job in batch for s in job.signals or ()]
        conn.execute("BEGIN IMMEDIATE")
        try:
            known = _existing_ids(conn, [s.id for s in signals])
            fresh: dict[str, Signal] = {}
            for signal in signals:
                if signal.id not in known:
                    fresh.setdefault(signal.id, signal)
            # A request's signals share one received_at: format it once per request.
            stamps: dict[int, str] = {}
            for signal in fresh.values():
                if id(signal.received_at) not in stamps:
                    stamps[id(signal.received_at)] = _utc_text(signal.received_at)
            conn.executemany(
                INSERT_SIGNAL,
                (_signal_row(s, stamps[id(s.received_at)]) for s in fresh.values()),
            )
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        return set(fresh)

    @staticmethod
    def _run_action(conn: sqlite3.Connection, job: _Job) -> None:
        assert job.action is not None
        if job.abandoned:
            return
        try:
            result = job.action(conn)
        except Exception as exc:  # noqa: BLE001 - every job is settled, whatever it raised
            _rollback(conn)
            job.resolve(None, _job_error(exc))
            return
        job.resolve(result)

    async def _submit(self, job_factory: Callable[[asyncio.Future[Any]], _Job]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        with self._accepting:
            if self._writer is None:
                raise TemporaryError("journal is not open", delay=1.0)
            if self._stopped is not None:
                raise TemporaryError(self._stopped, delay=1.0)
            self._queue.put(job_factory(future))
        return await self._within_deadline(future, "write")

    async def _within_deadline(self, work: Awaitable[Any], what: str) -> Any:
        # On timeout the future is cancelled: a queued write is then skipped, one
        # already running completes and stands (Alertmanager's retry is a duplicate).
        # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation
        # that arrives as the work completes, and a root task would then never stop.
        try:
            async with asyncio.timeout(self._call_timeout):
                return await work
        except TimeoutError as exc:
            raise TemporaryError(
                f"journal {what} took longer than {self._call_timeout:g}s", delay=1.0
            ) from exc

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
        """Commit a heartbeat: a full disk, a read-only filesystem or a lock fails it."""
        beat_at = _utc_text(self._clock())

        def beat(conn: sqlite3.Connection) -> None:
            self._check_free_space()
            conn.execute(
                "INSERT INTO heartbeat (id, beat_at, instance) VALUES (1, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET beat_at = excluded.beat_at,"
                " instance = excluded.instance",
                (beat_at, self._instance),
            )

        await self._transaction(beat)

    def _check_free_space(self) -> None:
        try:
            stat = os.statvfs(self._path.parent)
        except OSError as exc:
            raise TemporaryError(f"journal filesystem: {exc}", delay=1.0) from exc
        free = stat.f_bavail * stat.f_frsize
        if free < self._min_free_bytes:
            raise TemporaryError(
                f"journal filesystem nearly full: {free} bytes free, "
                f"at least {self._min_free_bytes} needed",
                delay=1.0,
            )

    async def prune(self, *, older_than_seconds: float) -> int:
        """Delete old signals in batches of at most ``prune_batch_size``, one transaction each.

        Between batches the writer serves whatever queued meanwhile (webhooks). Deleting
        a signal rewrites a random page of the id index, so a batch costs about a page
        write per row: batches shrink until each takes about PRUNE_BATCH_TARGET_SECONDS
        on this disk, and end early when another write is waiting.
        """
        cutoff = _utc_text(self._clock() - timedelta(seconds=older_than_seconds))
        limit = min(self._prune_batch_size, PRUNE_CHUNK_ROWS)
        total = 0
        after: int | None = 0
        while after is not None:
            batch: _PruneBatch = await self._write(
                functools.partial(
                    _prune_batch, cutoff=cutoff, after=after, limit=limit, waiting=self._waiting
                )
            )
            total += batch.deleted
            after = batch.next_after
            limit = _next_prune_limit(batch, limit, most=self._prune_batch_size)
        return total

    def _waiting(self) -> bool:
        """Another job is queued for the writer (called on the writer thread)."""
        return not self._queue.empty()

    async def list_signals(
        self, *, service: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> SignalPage:
        check_limit(limit)
        before = None if cursor is None else parse_cursor(cursor)
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
            "SELECT seq, id, source, kind, status, service, namespace, starts_at, ends_at,"
            f" received_at, body FROM signals {where}"
            " ORDER BY seq DESC LIMIT ?"
        )

        def query(conn: sqlite3.Connection) -> SignalPage:
            rows = conn.execute(sql, (*params, limit + 1)).fetchall()
            items, cursors, next_cursor = _page_of(rows, limit, _row_to_item)
            return SignalPage(items=items, next_cursor=next_cursor, item_cursors=cursors)

        result: SignalPage = await self._read(query)
        return result

    # -- helpers -------------------------------------------------------------------
    async def _write(self, action: Callable[[sqlite3.Connection], Any]) -> Any:
        loop = asyncio.get_running_loop()
        return await self._submit(lambda fut: _Job(loop=loop, future=fut, action=action))

    async def _transaction(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``work`` in one write transaction (BEGIN IMMEDIATE ... COMMIT)."""

        def run(conn: sqlite3.Connection) -> Any:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(conn)
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
            return result

        return await self._write(run)

    async def _read(self, query: Callable[[sqlite3.Connection], Any]) -> Any:
        timeout = self._call_timeout

        def run() -> Any:
            if not self._reader_lock.acquire(timeout=timeout):
                raise TemporaryError(f"journal read waited {timeout:g}s for the reader")
            try:
                if self._reader is None:
                    raise TemporaryError("journal is not open", delay=1.0)
                self._read_deadline = time.monotonic() + timeout
                return query(self._reader)
            except sqlite3.Error as exc:
                raise TemporaryError(f"journal read failed: {exc}", delay=1.0) from exc
            finally:
                self._read_deadline = None
                self._reader_lock.release()

        return await self._within_deadline(asyncio.to_thread(run), "read")

    # -- decisions -------------------------------------------------------------------
    async def undecided_signals(self, *, limit: int) -> list[StoredSignal]:
        def query(conn: sqlite3.Connection) -> list[StoredSignal]:
            (cursor,) = conn.execute(
                "SELECT value FROM engine_state WHERE name = 'decided_seq'"
            ).fetchone()
            rows = conn.execute(
                "SELECT seq, id, key, source, kind, status, service, namespace, starts_at,"
                " ends_at, received_at, body FROM signals WHERE seq > ? ORDER BY seq LIMIT ?",
                (int(cursor), limit),
            ).fetchall()
            return [_row_to_stored(row) for row in rows]

        result: list[StoredSignal] = await self._read(query)
        return result

    async def record_decisions(
        self,
        decisions: Sequence[DecisionRecord],
        *,
        through_seq: int,
        outbox: Sequence[OutboxMessage] = (),
    ) -> None:
        def write(conn: sqlite3.Connection) -> None:
            _insert_outbox(conn, outbox)
            conn.executemany(
                "INSERT OR IGNORE INTO decisions (signal_seq, signal_id, service, outcome,"
                " reason, rule, remediation_id, decided_at, explanation)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (d.signal_seq, d.signal_id, d.service, d.outcome, d.reason, d.rule,
                     d.remediation.id if d.remediation else None, _utc_text(d.decided_at),
                     d.explanation)
                    for d in decisions
                ],
            )  # fmt: skip
            conn.executemany(
                "INSERT OR IGNORE INTO remediations (id, signal_id, service, namespace, rule,"
                " action, status, reason, manual, automated, created_at, updated_at,"
                " decision, explanation) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (r.id, r.signal_id, r.service, r.namespace, r.rule, r.action, r.status,
                     r.reason, int(r.manual), int(r.automated), _utc_text(r.created_at),
                     _utc_text(r.created_at), orjson.dumps(r.decision).decode(),
                     r.explanation)
                    for r in (d.remediation for d in decisions)
                    if r is not None
                ],
            )  # fmt: skip
            conn.execute(
                "UPDATE engine_state SET value = ? WHERE name = 'decided_seq'",
                (str(through_seq),),
            )

        await self._transaction(write)

    async def service_events(
        self,
        *,
        service: str,
        kinds: Sequence[str],
        limit: int = 50,
        sources: Sequence[str] | None = None,
    ) -> list[StoredSignal]:
        if not kinds or (sources is not None and not sources):
            return []
        marks = ",".join("?" * len(kinds))
        by_source = "" if sources is None else f" AND source IN ({','.join('?' * len(sources))})"

        def query(conn: sqlite3.Connection) -> list[StoredSignal]:
            rows = conn.execute(
                "SELECT seq, id, key, source, kind, status, service, namespace, starts_at,"
                f" ends_at, received_at, body FROM signals WHERE service = ? AND kind IN ({marks})"
                f"{by_source} ORDER BY seq DESC LIMIT ?",
                (service, *kinds, *(sources or ()), limit),
            ).fetchall()
            return [_row_to_stored(row) for row in rows]

        result: list[StoredSignal] = await self._read(query)
        return result

    async def firing_alert_times(
        self, *, service: str, kinds: Sequence[str], since: datetime, until: datetime
    ) -> list[datetime]:
        if not kinds:
            return []
        marks = ",".join("?" * len(kinds))

        def query(conn: sqlite3.Connection) -> list[datetime]:
            rows = conn.execute(
                f"SELECT starts_at FROM signals WHERE service = ? AND kind IN ({marks})"
                " AND status = 'firing' AND starts_at >= ? AND starts_at < ?",
                (service, *kinds, _utc_text(since), _utc_text(until)),
            ).fetchall()
            return [_parse_utc(r[0]) for r in rows]

        result: list[datetime] = await self._read(query)
        return result

    # -- outbox ----------------------------------------------------------------------
    async def enqueue(self, messages: Sequence[OutboxMessage]) -> None:
        if messages:
            await self._write(lambda conn: _insert_outbox(conn, messages))

    async def pending(self, *, channel: str, limit: int) -> list[PendingMessage]:
        def query(conn: sqlite3.Connection) -> list[PendingMessage]:
            rows = conn.execute(
                "SELECT seq, id, channel, key, payload, created_at, attempts FROM outbox"
                " WHERE channel = ? AND published_at IS NULL ORDER BY seq LIMIT ?",
                (channel, limit),
            ).fetchall()
            return [
                PendingMessage(
                    seq=r[0],
                    message=OutboxMessage(
                        id=r[1],
                        channel=r[2],
                        key=r[3],
                        payload=orjson.loads(r[4]),
                        created_at=_parse_utc(r[5]),
                    ),
                    attempts=r[6],
                )
                for r in rows
            ]

        result: list[PendingMessage] = await self._read(query)
        return result

    async def mark_published(self, *, ids: Sequence[str], at: datetime) -> None:
        stamp = _utc_text(at)
        await self._write(
            lambda conn: conn.executemany(
                "UPDATE outbox SET published_at = ? WHERE id = ? AND published_at IS NULL",
                [(stamp, i) for i in ids],
            )
        )

    async def mark_failed_attempt(self, *, ids: Sequence[str], error: str) -> None:
        await self._write(
            lambda conn: conn.executemany(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE id = ?",
                [(error[:1000], i) for i in ids],
            )
        )

    async def mark_dead(self, *, ids: Sequence[str], error: str, at: datetime) -> None:
        stamp = _utc_text(at)
        await self._write(
            lambda conn: conn.executemany(
                "UPDATE outbox SET published_at = ?, attempts = attempts + 1, last_error = ?"
                " WHERE id = ?",
                [(stamp, f"dead: {error}"[:1000], i) for i in ids],
            )
        )

    async def slack_ref(self, remediation_id: str) -> SlackMessageRef | None:
        def query(conn: sqlite3.Connection) -> SlackMessageRef | None:
            row = conn.execute(
                "SELECT channel, ts FROM slack_messages WHERE remediation_id = ?",
                (remediation_id,),
            ).fetchone()
            return None if row is None else SlackMessageRef(channel=row[0], ts=row[1])

        result: SlackMessageRef | None = await self._read(query)
        return result

    async def save_slack_ref(self, remediation_id: str, ref: SlackMessageRef) -> None:
        await self._write(
            lambda conn: conn.execute(
                "INSERT OR REPLACE INTO slack_messages (remediation_id, channel, ts)"
                " VALUES (?, ?, ?)",
                (remediation_id, ref.channel, ref.ts),
            )
        )

    async def outbox_backlog(self) -> dict[str, int]:
        def query(conn: sqlite3.Connection) -> dict[str, int]:
            rows = conn.execute(
                "SELECT channel, count(*) FROM outbox WHERE published_at IS NULL GROUP BY channel"
            ).fetchall()
            return {channel: count for channel, count in rows}

        result: dict[str, int] = await self._read(query)
        return result

    async def remediation_history(
        self, *, service: str, since: datetime
    ) -> list[RemediationSummary]:
        def query(conn: sqlite3.Connection) -> list[RemediationSummary]:
            rows = conn.execute(
                "SELECT id, action, status, rule, manual, automated, created_at FROM remediations"
                " WHERE service = ? AND created_at >= ? AND status != 'skipped' ORDER BY seq",
                (service, _utc_text(since)),
            ).fetchall()
            return [
                RemediationSummary(
                    id=r[0],
                    action=r[1],
                    status=r[2],
                    rule=r[3],
                    manual=bool(r[4]),
                    automated=bool(r[5]),
                    created_at=_parse_utc(r[6]),
                )
                for r in rows
            ]

        result: list[RemediationSummary] = await self._read(query)
        return result

    async def automated_actions_since(self, *, since: datetime | None) -> list[datetime]:
        def query(conn: sqlite3.Connection) -> list[datetime]:
            rows = conn.execute(
                "SELECT created_at FROM remediations WHERE automated = 1"
                " AND status NOT IN ('skipped', 'dry-run', 'awaiting_approval')"
                " AND created_at >= ?",
                (_utc_text(since) if since else "",),
            ).fetchall()
            return [_parse_utc(r[0]) for r in rows]

        result: list[datetime] = await self._read(query)
        return result

    async def consecutive_failures(self, *, since: datetime | None) -> int:
        def query(conn: sqlite3.Connection) -> int:
            rows = conn.execute(
                "SELECT status FROM remediations WHERE status IN ('succeeded', 'failed')"
                " AND updated_at >= ? ORDER BY updated_at DESC LIMIT 100",
                (_utc_text(since) if since else "",),
            ).fetchall()
            count = 0
            for (status,) in rows:
                if status != "failed":
                    break
                count += 1
            return count

        result: int = await self._read(query)
        return result

    async def circuit(self) -> CircuitRecord:
        def query(conn: sqlite3.Connection) -> CircuitRecord:
            (value,) = conn.execute(
                "SELECT value FROM engine_state WHERE name = 'circuit'"
            ).fetchone()
            doc = orjson.loads(value)
            changed = doc.get("changed_at")
            return CircuitRecord(
                open=bool(doc["open"]),
                reason=doc.get("reason"),
                changed_at=_parse_utc(changed) if changed else None,
                changed_by=doc.get("changed_by"),
            )

        result: CircuitRecord = await self._read(query)
        return result

    async def set_circuit(
        self, *, open: bool, reason: str | None, at: datetime, by: str | None = None
    ) -> None:
        value = orjson.dumps(
            {"open": open, "reason": reason, "changed_at": _utc_text(at), "changed_by": by}
        )

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE engine_state SET value = ? WHERE name = 'circuit'", (value.decode(),)
            )

        await self._write(write)

    async def list_remediations(
        self,
        *,
        service: str | None = None,
        status: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        check_limit(limit)
        before = None if cursor is None else parse_cursor(cursor)
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("service", service), ("status", status)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if before is not None:
            clauses.append("seq < ?")
            params.append(before)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""

        def query(conn: sqlite3.Connection) -> Page:
            rows = conn.execute(
                f"SELECT {_REMEDIATION_COLUMNS} FROM remediations {where}"
                " ORDER BY seq DESC LIMIT ?",
                (*params, limit + 1),
            ).fetchall()
            items, cursors, next_cursor = _page_of(rows, limit, _remediation_item)
            return Page(items=items, next_cursor=next_cursor, item_cursors=cursors)

        result: Page = await self._read(query)
        return result

    async def get_signal(self, signal_id: str) -> Signal | None:
        def query(conn: sqlite3.Connection) -> Signal | None:
            row = conn.execute(
                "SELECT seq, id, key, source, kind, status, service, namespace, starts_at,"
                " ends_at, received_at, body FROM signals WHERE id = ?",
                (signal_id,),
            ).fetchone()
            return None if row is None else _row_to_stored(row).signal

        result: Signal | None = await self._read(query)
        return result

    # -- execution -------------------------------------------------------------------
    async def runnable_remediations(self, *, limit: int) -> list[dict[str, Any]]:
        def query(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = conn.execute(
                f"SELECT {_REMEDIATION_COLUMNS} FROM remediations WHERE finished_at IS NULL"
                " AND claimed_at IS NULL AND status IN ('planned', 'dry-run') ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
            return [_remediation_item(row, full=True) for row in rows]

        result: list[dict[str, Any]] = await self._read(query)
        return result

    async def claim_remediation(
        self, remediation_id: str, *, by: str, at: datetime, outbox: Sequence[OutboxMessage] = ()
    ) -> bool:
        stamp = _utc_text(at)

        def write(conn: sqlite3.Connection) -> bool:
            claimed = conn.execute(
                "UPDATE remediations SET claimed_by = ?, claimed_at = ?, updated_at = ?,"
                " status = CASE status WHEN 'planned' THEN 'running' ELSE status END"
                " WHERE id = ? AND claimed_at IS NULL AND finished_at IS NULL",
                (by, stamp, stamp, remediation_id),
            ).rowcount
            if claimed:
                _insert_outbox(conn, outbox)
            return bool(claimed)

        result: bool = await self._transaction(write)
        return result

    async def unfinished_claims(self) -> list[dict[str, Any]]:
        def query(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = conn.execute(
                f"SELECT {_REMEDIATION_COLUMNS} FROM remediations WHERE finished_at IS NULL"
                " AND claimed_at IS NOT NULL ORDER BY seq"
            ).fetchall()
            return [_remediation_item(row, full=True) for row in rows]

        result: list[dict[str, Any]] = await self._read(query)
        return result

    async def step_started(self, remediation_id: str, *, idx: int, kind: str, at: datetime) -> None:
        await self._write(
            lambda conn: conn.execute(
                "INSERT OR REPLACE INTO remediation_steps (remediation_id, idx, kind, status,"
                " started_at) VALUES (?, ?, ?, 'started', ?)",
                (remediation_id, idx, kind, _utc_text(at)),
            )
        )

    async def step_finished(
        self, remediation_id: str, *, idx: int, status: str, detail: dict[str, Any], at: datetime
    ) -> None:
        await self._write(
            lambda conn: conn.execute(
                "UPDATE remediation_steps SET status = ?, detail = ?, finished_at = ?"
                " WHERE remediation_id = ? AND idx = ?",
                (status, orjson.dumps(detail).decode(), _utc_text(at), remediation_id, idx),
            )
        )

    async def remediation_steps(self, remediation_id: str) -> list[dict[str, Any]]:
        def query(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            return _steps(conn, remediation_id)

        result: list[dict[str, Any]] = await self._read(query)
        return result

    async def finish_remediation(
        self,
        remediation_id: str,
        *,
        status: str | None,
        reason: str | None,
        at: datetime,
        outbox: Sequence[OutboxMessage] = (),
    ) -> None:
        stamp = _utc_text(at)

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE remediations SET status = coalesce(?, status),"
                " reason = coalesce(?, reason), finished_at = ?, updated_at = ?"
                " WHERE id = ? AND finished_at IS NULL",
                (status, reason, stamp, stamp, remediation_id),
            )
            _insert_outbox(conn, outbox)

        await self._transaction(write)

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
        stamp = _utc_text(at)
        approved_as = orjson.dumps(list(roles)).decode() if roles else None

        def write(conn: sqlite3.Connection) -> bool:
            approved = conn.execute(
                "UPDATE remediations SET status = 'planned', approved_by = ?,"
                " approved_at = ?, approved_as = ?, approval_comment = ?, updated_at = ?"
                " WHERE id = ? AND status = 'awaiting_approval'",
                (by, stamp, approved_as, comment, stamp, remediation_id),
            ).rowcount
            if approved:
                _insert_outbox(conn, outbox)
            return bool(approved)

        result: bool = await self._transaction(write)
        return result

    async def get_remediation(self, remediation_id: str) -> dict[str, Any] | None:
        def query(conn: sqlite3.Connection) -> dict[str, Any] | None:
            row = conn.execute(
                f"SELECT {_REMEDIATION_COLUMNS} FROM remediations WHERE id = ?",
                (remediation_id,),
            ).fetchone()
            if row is None:
                return None
            item = _remediation_item(row, full=True)
            item["steps"] = _steps(conn, remediation_id)
            return item

        result: dict[str, Any] | None = await self._read(query)
        return result


_REMEDIATION_COLUMNS = (
    "seq, id, signal_id, service, namespace, rule, action, status, reason, manual, automated,"
    " created_at, updated_at, decision, explanation, claimed_by, claimed_at, finished_at,"
    " approved_by, approved_at, approved_as, approval_comment"
)


def _steps(conn: sqlite3.Connection, remediation_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT idx, kind, status, started_at, finished_at, detail FROM remediation_steps"
        " WHERE remediation_id = ? ORDER BY idx",
        (remediation_id,),
    ).fetchall()
    return [
        {"idx": r[0], "kind": r[1], "status": r[2], "started_at": r[3], "finished_at": r[4],
         "detail": orjson.loads(r[5])}
        for r in rows
    ]  # fmt: skip


def _remediation_item(row: tuple[Any, ...], *, full: bool = False) -> dict[str, Any]:
    (_, rid, signal_id, service, namespace, rule, action, status, reason, manual, automated,
     created_at, updated_at, decision, explanation, claimed_by, claimed_at, finished_at,
     approved_by, approved_at, approved_as, approval_comment) = row  # fmt: skip
    item: dict[str, Any] = {
        "id": rid,
        "signal_id": signal_id,
        "service": service,
        "namespace": namespace,
        "rule": rule,
        "action": action,
        "status": status,
        "reason": reason,
        "manual": bool(manual),
        "automated": bool(automated),
        "created_at": created_at,
        "updated_at": updated_at,
        "explanation": explanation,
        "claimed_by": claimed_by,
        "claimed_at": claimed_at,
        "finished_at": finished_at,
        "approved_by": approved_by,
        "approved_at": approved_at,
        "approved_as": orjson.loads(approved_as) if approved_as else None,
        "approval_comment": approval_comment,
    }
    if full:
        item["decision"] = orjson.loads(decision)
    return item


def _insert_outbox(conn: sqlite3.Connection, messages: Sequence[OutboxMessage]) -> None:
    conn.executemany(
        "INSERT OR IGNORE INTO outbox (id, channel, key, payload, created_at)"
        " VALUES (?, ?, ?, ?, ?)",
        [
            (m.id, m.channel, m.key, orjson.dumps(m.payload).decode(), _utc_text(m.created_at))
            for m in messages
        ],
    )


@dataclass(frozen=True, slots=True)
class _PruneBatch:
    deleted: int
    examined: int
    next_after: int | None  # where the next batch starts; None: done
    seconds: float  # the batch's time on the writer, commit and checkpoint included


def _prune_batch(
    conn: sqlite3.Connection,
    *,
    cutoff: str,
    after: int,
    limit: int,
    waiting: Callable[[], bool],
) -> _PruneBatch:
    """Delete old signals among at most ``limit`` after seq ``after``, in one transaction.

    Rows are examined in seq order, a chunk at a time. The prune is done at the end of
    the table or at the first chunk holding no old signal: seq grows with received_at,
    so that is where the signals still within retention begin. A newer signal among old
    ones (the clock stepped back) is kept, never forgotten early. No index on
    received_at: it would tax every insert on the webhook's hot path.
    """
    started = time.monotonic()
    deleted = examined = 0
    next_after: int | None = after
    conn.execute("BEGIN IMMEDIATE")
    try:
        while next_after is not None:
            size = min(PRUNE_CHUNK_ROWS, limit - examined)
            rows = conn.execute(
                "SELECT seq, received_at FROM signals WHERE seq > ? ORDER BY seq LIMIT ?",
                (next_after, size),
            ).fetchall()
            old = [seq for seq, received_at in rows if received_at < cutoff]
            if rows and len(old) == len(rows):
                conn.execute(
                    "DELETE FROM signals WHERE seq > ? AND seq <= ?", (next_after, rows[-1][0])
                )
            elif old:
                conn.executemany("DELETE FROM signals WHERE seq = ?", [(seq,) for seq in old])
            deleted += len(old)
            examined += len(rows)
            next_after = None if not old or len(rows) < size else rows[-1][0]
            if examined >= limit or waiting():
                break
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise
    # Copy the batch's pages into the database now, in the prune's turn, rather than in
    # the next webhook's commit (SQLite checkpoints in whichever commit crosses the
    # threshold). An optimisation only: a failure here leaves it to a later commit.
    with contextlib.suppress(sqlite3.Error):
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    return _PruneBatch(deleted, examined, next_after, time.monotonic() - started)


def _next_prune_limit(batch: _PruneBatch, limit: int, *, most: int) -> int:
    """As many rows as the last batch's pace fits in the target time; at most doubling,
    so one quick batch (e.g. cut short by a waiting write) cannot overshoot."""
    if batch.examined == 0 or batch.seconds <= 0:
        return limit
    fits = int(batch.examined * PRUNE_BATCH_TARGET_SECONDS / batch.seconds)
    return max(1, min(most, limit * 2, fits))


def _parse_utc(text: str) -> datetime:
    return datetime.fromisoformat(text.removesuffix("Z")).replace(tzinfo=UTC)


def _row_to_stored(row: tuple[Any, ...]) -> StoredSignal:
    (seq, sid, key, source, kind, status, service, namespace, starts_at, ends_at, received_at,
     body) = row  # fmt: skip
    doc = orjson.loads(body)
    return StoredSignal(
        seq=seq,
        signal=Signal(
            id=sid,
            key=key,
            source=Source(source),
            kind=kind,
            status=Status(status),
            service=service,
            namespace=namespace,
            labels=doc["labels"],
            annotations=doc["annotations"],
            starts_at=_parse_utc(starts_at) if starts_at else None,
            ends_at=_parse_utc(ends_at) if ends_at else None,
            received_at=_parse_utc(received_at),
            raw=doc["raw"],
            received_by=doc.get("received_by"),
        ),
    )


INSERT_SIGNAL = (
    "INSERT INTO signals (id, key, source, kind, status, service, namespace, starts_at,"
    " ends_at, received_at, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# SQLite's default limit on host parameters is 999 before 3.32 and 32766 after.
_LOOKUP_CHUNK = 900


def _existing_ids(conn: sqlite3.Connection, ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(ids), _LOOKUP_CHUNK):
        chunk = ids[start : start + _LOOKUP_CHUNK]
        marks = ",".join("?" * len(chunk))
        found.update(
            row[0] for row in conn.execute(f"SELECT id FROM signals WHERE id IN ({marks})", chunk)
        )
    return found


def _signal_row(signal: Signal, received_at: str) -> tuple[Any, ...]:
    return (
        signal.id,
        signal.key,
        signal.source.value,
        signal.kind,
        signal.status.value,
        signal.service,
        signal.namespace,
        _ts(signal.starts_at),
        _ts(signal.ends_at),
        received_at,
        orjson.dumps(_signal_body(signal)).decode(),
    )


def _signal_body(signal: Signal) -> dict[str, Any]:
    body: dict[str, Any] = {
        "labels": signal.labels,
        "annotations": signal.annotations,
        "raw": signal.raw,
    }
    if signal.received_by is not None:
        body["received_by"] = signal.received_by  # the principal that sent it
    return body


def _page_of(
    rows: Sequence[tuple[Any, ...]], limit: int, item: Callable[[tuple[Any, ...]], dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[str], str | None]:
    """Items of a ``limit + 1`` query (newest first), the cursor continuing after each
    item (its seq), and the page's ``next`` cursor."""
    kept = rows[:limit]
    cursors = [str(row[0]) for row in kept]
    return [item(row) for row in kept], cursors, cursors[-1] if len(rows) > limit else None


def _row_to_item(row: tuple[Any, ...]) -> dict[str, Any]:
    (_, sid, source, kind, status, service, namespace, starts_at, ends_at, received_at,
     body) = row  # fmt: skip
    doc = orjson.loads(body)
    return {
        "id": sid,
        "source": source,
        "kind": kind,
        "status": status,
        "service": service,
        "namespace": namespace,
        "routable": service is not None,
        "labels": doc["labels"],
        "annotations": doc["annotations"],
        "starts_at": starts_at,
        "ends_at": ends_at,
        "received_at": received_at,
        "received_by": doc.get("received_by"),
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
            for statement in _statements(sql):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        log.info("journal schema migrated to version %d (%s)", version, entry.name)


def _statements(sql: str) -> list[str]:
    """Split a script into statements (executescript would commit on its own)."""
    statements, buffer = [], ""
    for line in sql.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip() and not all(
        part.strip().startswith("--") or not part.strip() for part in buffer.splitlines()
    ):
        raise PermanentError(f"incomplete SQL statement in migration: {buffer.strip()[:80]}")
    return statements
