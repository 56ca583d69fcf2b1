"""Intake with group commit: concurrent ``record_signals`` calls share one transaction.

One commit per webhook request would cap intake at the server's commit rate, so calls
queue up and one writer task commits everything waiting in one transaction, then the
next batch. Each transaction takes the intake advisory lock first: across replicas,
signals are inserted and committed one batch at a time, so a seq never becomes visible
after a higher one and a decider reading ``seq > cursor`` never skips a signal that
commits late. Group commit keeps that lock cheap.

Should the writer task itself die (a bug), every queued and later call fails at once
and ``alive()`` turns false, as the SQLite journal's writer thread does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import asyncpg

from remediator.domain.errors import PermanentError, RemediatorError, TemporaryError
from remediator.domain.failpoints import NO_FAILPOINTS, Failpoints
from remediator.domain.signals import Signal, Source
from remediator.journal.postgres.database import Database
from remediator.journal.postgres.migrate import advisory_key
from remediator.journal.postgres.rows import NUL, json_text, pg_text, signal_body
from remediator.ports import RecordResult

log = logging.getLogger(__name__)

INTAKE_LOCK = advisory_key("remediator.journal.intake")
HUNG_AFTER_DEADLINES = 12  # with the default 5 s deadline: hung after 60 s in one batch

INSERT_SIGNALS = """
INSERT INTO signals (id, key, source, kind, status, service, namespace, starts_at, ends_at,
                     received_at, body)
SELECT id, key, source, kind, status, service, namespace, starts_at, ends_at, received_at,
       body::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::text[], $8::timestamptz[], $9::timestamptz[], $10::timestamptz[], $11::text[])
     WITH ORDINALITY AS s (id, key, source, kind, status, service, namespace, starts_at,
                           ends_at, received_at, body, ord)
ORDER BY ord
ON CONFLICT (id) DO NOTHING
RETURNING id, seq
"""


@dataclass(slots=True)
class _Job:
    signals: Sequence[Signal]
    future: asyncio.Future[list[RecordResult]]

    @property
    def abandoned(self) -> bool:
        """The caller stopped waiting (deadline, disconnect): don't start its write."""
        return self.future.done()

    def settle(self, result: list[RecordResult] | None, error: BaseException | None) -> None:
        if self.future.done():  # the caller stopped waiting; a committed write stands
            return
        if error is not None:
            self.future.set_exception(error)
        else:
            assert result is not None
            self.future.set_result(result)


_STOP = object()


class Intake:
    def __init__(
        self,
        db: Database,
        *,
        max_batch: int,
        failpoints: Failpoints = NO_FAILPOINTS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._max_batch = max_batch
        self._failpoints = failpoints
        self._monotonic = monotonic
        self._queue: asyncio.Queue[_Job | object] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._stopped: str | None = "journal is not open"
        self._working_since: float | None = None
        self.last_batch_size = 0  # observability: signals in the most recent commit

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._stopped = None
        self._task = asyncio.create_task(self._run(), name="journal-intake")

    async def stop(self) -> None:
        """Commit what is queued, then end the writer (cut short past a deadline)."""
        task, self._task = self._task, None
        if task is None:
            return
        if self._stopped is None:
            self._stopped = "journal is closed"
            self._queue.put_nowait(_STOP)
        done, _ = await asyncio.wait({task}, timeout=2 * self._db.call_timeout)
        if not done:
            task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            if not done:  # we cancelled it; a cancellation of our caller propagates
                return
            raise

    def alive(self) -> bool:
        task = self._task
        if task is None or task.done() or self._stopped is not None:
            return False
        since = self._working_since
        hung_after = HUNG_AFTER_DEADLINES * self._db.call_timeout
        return since is None or self._monotonic() - since <= hung_after

    async def record(self, signals: Sequence[Signal]) -> list[RecordResult]:
        if self._stopped is not None:
            raise TemporaryError(self._stopped, delay=1.0)
        future: asyncio.Future[list[RecordResult]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Job(signals, future))
        # On timeout the future is cancelled: a queued write is then skipped, one
        # already running completes and stands (Alertmanager's retry is a duplicate).
        timeout = self._db.call_timeout
        try:
            async with asyncio.timeout(timeout):
                return await future
        except TimeoutError as exc:
            raise TemporaryError(f"journal write took longer than {timeout:g}s") from exc

    # -- the writer task -------------------------------------------------------------
    async def _run(self) -> None:
        in_hand: list[_Job] = []
        reason = "journal is closed"
        try:
            await self._serve(in_hand)
        except Exception as exc:  # the task's last word: settle every caller
            reason = f"journal writer stopped ({type(exc).__name__}: {exc})"
            log.critical(
                "%s: every journal call fails until the daemon restarts", reason, exc_info=exc
            )
            self._db.refuse(reason)
        finally:
            self._fail_everything(reason, in_hand)

    def _fail_everything(self, reason: str, in_hand: list[_Job]) -> None:
        self._stopped = reason
        error = TemporaryError(reason, delay=1.0)
        for job in in_hand:
            job.settle(None, error)
        while not self._queue.empty():
            leftover = self._queue.get_nowait()
            if isinstance(leftover, _Job):
                leftover.settle(None, error)

    async def _serve(self, in_hand: list[_Job]) -> None:
        while True:
            first = await self._queue.get()
            if first is _STOP:
                return
            assert isinstance(first, _Job)
            in_hand[:] = [first]
            count, stop_after = len(first.signals), False
            while count < self._max_batch and not self._queue.empty():
                nxt = self._queue.get_nowait()
                if nxt is _STOP:
                    stop_after = True
                    break
                assert isinstance(nxt, _Job)
                in_hand.append(nxt)
                count += len(nxt.signals)
            self._working_since = self._monotonic()
            try:
                # A bug outside any one request; keyed by the first signal's service so
                # a test can let the daemon start first.
                self._failpoints.hit("journal.writer", first.signals[0].service)
                await self._commit(in_hand)
            finally:
                self._working_since = None
            in_hand.clear()
            if stop_after:
                return

    async def _commit(self, jobs: list[_Job]) -> None:
        batch = [job for job in jobs if not job.abandoned]
        if not batch:
            return
        unique: dict[str, Signal] = {}
        for job in batch:
            for signal in job.signals:
                unique.setdefault(signal.id, signal)
        try:
            rows, fresh = await self._insert(list(unique.values()))
        except TemporaryError as exc:
            log.error("journal write of %d request(s) failed: %s", len(batch), exc)
            for job in batch:
                job.settle(None, exc)
            return
        except RemediatorError as exc:
            if len(batch) > 1:
                # One request's bad input must not fail the others sharing its commit.
                for job in batch:
                    await self._commit([job])
                return
            log.error("journal refused a request's signals: %s", exc)
            batch[0].settle(None, exc)
            return
        self.last_batch_size = sum(len(job.signals) for job in batch)
        # The first occurrence of a fresh id in this batch is the one stored; every
        # other occurrence (an earlier commit, any replica, or this batch) is a duplicate.
        claimed: set[str] = set()
        for job in batch:
            results = []
            for signal in job.signals:
                new = signal.id in fresh and signal.id not in claimed
                if new:
                    claimed.add(signal.id)
                seq = fresh[signal.id] if new and signal.id in rows.unchanged else None
                results.append(RecordResult(signal_id=signal.id, duplicate=not new, seq=seq))
            job.settle(results, None)

    async def _insert(self, signals: Sequence[Signal]) -> tuple[_Rows, dict[str, int]]:
        try:
            rows = _Rows(signals)
        except Exception as exc:
            # Input that cannot be encoded is refused like input the server refuses: one
            # request's alone (see _commit), never the writer task's end.
            raise PermanentError(f"journal intake: {type(exc).__name__}: {exc}") from exc
        return rows, await self._db.write("intake", lambda conn: _insert_signals(conn, rows))


class _Rows:
    """The INSERT_SIGNALS columns of signals with distinct ids, made once (outside the
    transaction and its retries), and which of them read back unchanged."""

    def __init__(self, signals: Sequence[Signal]) -> None:
        bodies = [json_text(signal_body(s)) for s in signals]
        self.columns = (
            [s.id for s in signals],
            [pg_text(s.key) for s in signals],
            [s.source.value for s in signals],
            [pg_text(s.kind) for s in signals],
            [s.status.value for s in signals],
            [pg_text(s.service) for s in signals],
            [pg_text(s.namespace) for s in signals],
            [s.starts_at for s in signals],
            [s.ends_at for s in signals],
            [s.received_at for s in signals],
            bodies,
        )
        self.unchanged = {
            s.id for s, body in zip(signals, bodies, strict=True) if _reads_back_equal(s, body)
        }


def _reads_back_equal(signal: Signal, body: str) -> bool:
    """Whether the stored row reads back equal to ``signal``, so that the decider may
    keep it instead of reading it (RecordResult.seq). Only an alert's: every value it
    carries is text (the payload is validated strictly), which PostgreSQL keeps as
    given unless it holds a NUL (stored as U+FFFD). A Kafka event's body may hold
    numbers, which jsonb may give back as another type (1e16 as an integer)."""
    # json_text stored an escaped NUL as an escaped U+FFFD; either escape is taken as a
    # NUL (an alert's text has no reason to carry the six characters literally).
    if signal.source is not Source.ALERTMANAGER or "\\ufffd" in body or "\\u0000" in body:
        return False
    texts = (signal.key, signal.kind, signal.service or "", signal.namespace or "")
    return not any(NUL in text for text in texts)


async def _insert_signals(conn: asyncpg.Connection, rows: _Rows) -> dict[str, int]:
    """Insert what is not yet journaled; the id and seq of each signal stored now."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", INTAKE_LOCK)
    inserted = await conn.fetch(INSERT_SIGNALS, *rows.columns)
    return {row["id"]: row["seq"] for row in inserted}
