"""One SQLite file: WAL, one writer thread with group commit, one reader, deadlines.

The durable write sits on the webhook's hot path. One commit per alert (or per
request) would cap intake at the disk's fsync rate, so concurrent batched writes
queue up and the writer thread commits everything waiting in one transaction. The
event loop never blocks: it awaits a future the writer resolves after COMMIT.

Every call has a deadline (``call_timeout_seconds``): past it the caller gets
``TemporaryError`` (a webhook answers 503) instead of waiting on a stuck disk. The
writer settles every job whatever it raises; should the thread itself die, every
queued and later call fails at once and ``alive()`` turns false, so /healthz fails
and Kubernetes restarts the pod.

This module knows nothing of signals or remediations: the journal's roles hand it
SQL to run (``write``, ``transaction``, ``read``) and, for intake, a batch committer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from remediator.domain.errors import PermanentError, RemediatorError, TemporaryError
from remediator.domain.failpoints import NO_FAILPOINTS, Failpoints

log = logging.getLogger(__name__)

# Short waits for a lock held by another process are absorbed here; past this the
# caller gets TemporaryError (the webhook answers 503 and Alertmanager retries).
BUSY_TIMEOUT_MS = 2000
HUNG_AFTER_DEADLINES = 12  # with the default 5 s journal deadline: hung after 60 s
DEFAULT_CALL_TIMEOUT_SECONDS = 5.0
# The writer connection's page cache (SQLite's default is 2 MiB) and how many WAL pages
# (4 KiB) a commit lets pile up before it checkpoints them (default 1,000).
WRITER_CACHE_KIB = 32 * 1024
WAL_CHECKPOINT_PAGES = 4000
# The writer checkpoints when idle, at most this often (see _checkpoint_in_lull).
LULL_CHECKPOINT_SECONDS = 1.0
# SQLite VM steps between checks of a read's deadline: each check takes the GIL, so
# not too often.
_PROGRESS_STEPS = 50_000

T = TypeVar("T")
Action = Callable[[sqlite3.Connection], Any]
# Commits the items of several requests in one transaction; one result per request.
BatchCommit = Callable[[sqlite3.Connection, Sequence[Sequence[Any]]], Sequence[Any]]


@dataclass(slots=True)
class _Job:
    """Work for the writer thread; ``items`` jobs are batched into one transaction."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    items: Sequence[Any] | None = None
    action: Action | None = None
    key: str | None = None  # narrows the journal.writer failpoint (a service)

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


def job_error(exc: Exception) -> RemediatorError:
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


def rollback(conn: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):
        if conn.in_transaction:
            conn.execute("ROLLBACK")


class SqliteDatabase:
    """The connections to one journal file, shared by every role of the journal.

    Public so that tools and tests can run their own SQL through the same writer
    thread and reader the journal uses (``write``, ``transaction``, ``read``).
    """

    def __init__(
        self,
        *,
        path: Path,
        migrate: Callable[[sqlite3.Connection], None],
        commit_batch: BatchCommit,
        max_batch: int = 5000,
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
        call_timeout_seconds: float = DEFAULT_CALL_TIMEOUT_SECONDS,
        failpoints: Failpoints = NO_FAILPOINTS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._migrate = migrate
        self._commit_batch = commit_batch
        self._failpoints = failpoints
        self._monotonic = monotonic
        # A writer busy with one job for this long is hung (a stuck fsync, a dead disk):
        # alive() turns False so the liveness probe restarts the pod.
        self._hung_after = HUNG_AFTER_DEADLINES * call_timeout_seconds
        self._working_since: float | None = None  # monotonic; set by the writer thread
        self._busy_timeout_ms = busy_timeout_ms
        self._max_batch = max_batch
        self._call_timeout = call_timeout_seconds
        self._queue: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        # Held while a job is queued and while the writer stops taking jobs, so no job
        # slips into the queue after the writer's last look at it.
        self._accepting = threading.Lock()
        self._stopped: str | None = None  # why the writer takes no more jobs
        self._reader: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()
        self._read_deadline: float | None = None  # monotonic; guarded by _reader_lock
        self.last_batch_size = 0  # observability: items in the most recent batched commit

    # -- lifecycle ---------------------------------------------------------------------
    async def open(self) -> None:
        if self._writer is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
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

    def waiting(self) -> bool:
        """Another job is queued for the writer (called on the writer thread)."""
        return not self._queue.empty()

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(
            self.path,
            isolation_level=None,
            check_same_thread=False,
            timeout=self._busy_timeout_ms / 1000,
        )

    def _connect_reader(self) -> sqlite3.Connection:
        conn = self._connect()
        # A read past its deadline is interrupted ("interrupted" -> TemporaryError), so
        # abandoned reads don't pile up in the thread pool behind the reader lock.
        conn.set_progress_handler(self._read_overdue, _PROGRESS_STEPS)
        return conn

    def _read_overdue(self) -> int:
        deadline = self._read_deadline
        return int(deadline is not None and time.monotonic() > deadline)

    # -- calls -------------------------------------------------------------------------
    async def write(self, action: Action) -> Any:
        """Run ``action`` on the writer thread (it manages its own transaction, if any)."""
        loop = asyncio.get_running_loop()
        return await self._submit(lambda fut: _Job(loop=loop, future=fut, action=action))

    async def transaction(self, work: Action) -> Any:
        """Run ``work`` on the writer thread in one transaction (BEGIN IMMEDIATE ... COMMIT);
        whatever it raises rolls everything back."""

        def run(conn: sqlite3.Connection) -> Any:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(conn)
                conn.execute("COMMIT")
            except BaseException:
                rollback(conn)
                raise
            return result

        return await self.write(run)

    async def write_batched(self, items: Sequence[Any], *, key: str | None) -> Any:
        """Queue ``items`` for the batch committer: requests queued together share one
        commit. ``key`` narrows the journal.writer failpoint."""
        loop = asyncio.get_running_loop()
        return await self._submit(lambda fut: _Job(loop=loop, future=fut, items=items, key=key))

    async def read(self, query: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``query`` on the reader connection, within the call deadline."""
        timeout = self._call_timeout

        def run() -> T:
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

        result: T = await self._within_deadline(asyncio.to_thread(run), "read")
        return result

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

    # -- writer thread -------------------------------------------------------------
    def _write_loop(self, loop: asyncio.AbstractEventLoop, ready: asyncio.Future[None]) -> None:
        try:
            conn = self._connect()
            conn.execute("PRAGMA journal_mode = WAL")
            # FULL: an acknowledged alert survives power loss, not only a crash. Group
            # commit keeps the fsync count low enough that this is affordable.
            conn.execute("PRAGMA synchronous = FULL")
            # Each signal's id is a hash: its index entry lands on a random page, so a
            # group commit dirties about one index page per signal. A page cache that
            # holds the index, and a checkpoint every 16 MiB of WAL rather than 4, write
            # each such page once for several commits: 1.75x the inserts per CPU second
            # on a journal of 300,000 signals (docs/benchmarks.md).
            conn.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
            conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")
            self._migrate(conn)
        except Exception as exc:  # noqa: BLE001 - reported to open()'s caller
            loop.call_soon_threadsafe(
                _settle, ready, None, PermanentError(f"journal {self.path}: {exc}")
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
        last_checkpoint = self._monotonic()
        while True:
            job = self._queue.get()
            if job is _STOP:
                return
            assert isinstance(job, _Job)
            if self._serve_one(conn, job, in_hand):
                return
            if (
                self._queue.empty()
                and self._monotonic() - last_checkpoint >= LULL_CHECKPOINT_SECONDS
            ):
                self._checkpoint_in_lull(conn)
                last_checkpoint = self._monotonic()

    def _checkpoint_in_lull(self, conn: sqlite3.Connection) -> None:
        """Copy the WAL's pages into the database while nothing waits for the writer.

        Left to SQLite, the commit that crosses WAL_CHECKPOINT_PAGES copies them all,
        and every write queued behind it waits (~100-300 ms for 16 MiB here, the
        p99 of alert to first write; bench/first_write.py). Done in a lull, at most
        once a second, each copy is small and nobody waits for it; under sustained load
        there is no lull and SQLite's own checkpoint remains. An optimisation only: a
        failure leaves the pages to a later checkpoint."""
        with self._working(), contextlib.suppress(sqlite3.Error):
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    @contextlib.contextmanager
    def _working(self) -> Iterator[None]:
        """Marks the writer busy (for ``alive``) until the work is done and before its
        callers are told, so that none of them can see it busy afterwards."""
        self._working_since = self._monotonic()
        try:
            yield
        finally:
            self._working_since = None

    def _serve_one(self, conn: sqlite3.Connection, job: _Job, in_hand: list[_Job]) -> bool:
        """Run ``job``, batching the batched writes queued behind it; True on _STOP."""
        in_hand[:] = [job]
        # A bug outside any one job; keyed (by intake, with the first signal's service)
        # so that a test can let the daemon start first.
        self._failpoints.hit("journal.writer", job.key)
        if job.action is not None:
            self._run_action(conn, job)
            in_hand.clear()
            return False
        pending = len(job.items or ())
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
                self._commit_batch_of(conn, in_hand)
                in_hand[:] = [nxt]
                self._run_action(conn, nxt)
                in_hand.clear()
                pending = 0
                continue
            in_hand.append(nxt)
            pending += len(nxt.items or ())
        if in_hand:
            self._commit_batch_of(conn, in_hand)
        in_hand.clear()
        return stop_after

    def _commit_batch_of(self, conn: sqlite3.Connection, jobs: list[_Job]) -> None:
        batch = [job for job in jobs if not job.abandoned]
        if not batch:
            return
        try:
            with self._working():
                results = self._commit_batch(conn, [job.items or () for job in batch])
        except Exception as exc:  # noqa: BLE001 - settled below, whatever it is
            rollback(conn)
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
                    self._commit_batch_of(conn, [job])
                return
            batch[0].resolve(None, job_error(exc))
            return
        self.last_batch_size = sum(len(job.items or ()) for job in batch)
        for job, result in zip(batch, results, strict=True):
            job.resolve(result)

    def _run_action(self, conn: sqlite3.Connection, job: _Job) -> None:
        assert job.action is not None
        if job.abandoned:
            return
        try:
            with self._working():
                result = job.action(conn)
        except Exception as exc:  # noqa: BLE001 - every job is settled, whatever it raised
            rollback(conn)
            job.resolve(None, job_error(exc))
            return
        job.resolve(result)


class Role:
    """One role of the journal (signals, decisions, ...) over the shared database.

    ``SqliteJournal`` composes every role over one ``SqliteDatabase``; a role may also
    be built alone over a database (a tool needing only that part)."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db
