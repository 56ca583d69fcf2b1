"""SignalStore on SQLite: intake with group commit, listing, and pruning in batches."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from remediator.domain.lifecycle import utc_text
from remediator.domain.paging import check_limit, parse_cursor
from remediator.domain.signals import Signal
from remediator.journal.sqlite.database import Role, SqliteDatabase, job_error, rollback
from remediator.journal.sqlite.rows import (
    INSERT_SIGNAL,
    SIGNAL_COLUMNS,
    newest_first_where,
    page_of,
    signal_item,
    signal_row,
    stored_signal,
)
from remediator.ports import RecordResult, SignalPage

DEFAULT_PRUNE_BATCH_SIZE = 5000
# A prune batch holds the writer: webhooks wait behind it. Batches adapt to about this
# long (commit included) and examine rows this many at a time.
PRUNE_BATCH_TARGET_SECONDS = 0.03
PRUNE_CHUNK_ROWS = 200
# Decisions of pruned signals deleted per transaction: a range of the table's key,
# no other index to update, so a few milliseconds.
DECISIONS_PRUNED_A_BATCH = 5000
# Signals encoded for the writer between yields to the event loop.
_STAGE_SLICE = 256
# SQLite's default limit on host parameters is 999 before 3.32 and 32766 after.
_LOOKUP_CHUNK = 900


class SqliteSignals(Role):
    def __init__(
        self,
        db: SqliteDatabase,
        *,
        clock: Callable[[], datetime],
        prune_batch_size: int = DEFAULT_PRUNE_BATCH_SIZE,
    ) -> None:
        Role.__init__(self, db)  # explicit: composed by multiple inheritance
        self._clock = clock
        self._prune_batch_size = prune_batch_size

    async def record_signals(self, signals: Sequence[Signal]) -> list[RecordResult]:
        if not signals:
            return []
        items: list[StagedSignal] = []
        try:
            for start in range(0, len(signals), _STAGE_SLICE):
                if start:
                    await asyncio.sleep(0)  # a 5,000-alert group encodes in ~20 ms
                items += staged(signals[start : start + _STAGE_SLICE])
        except Exception as exc:  # refused as the writer refuses a bad job
            raise job_error(exc) from exc
        result: list[RecordResult] = await self._db.write_batched(items, key=signals[0].service)
        return result

    async def list_signals(
        self, *, service: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> SignalPage:
        check_limit(limit)
        before = None if cursor is None else parse_cursor(cursor)
        where, params = newest_first_where([("service", service)], before)
        sql = f"SELECT {SIGNAL_COLUMNS} FROM signals {where} ORDER BY seq DESC LIMIT ?"

        def query(conn: sqlite3.Connection) -> SignalPage:
            rows = conn.execute(sql, (*params, limit + 1)).fetchall()
            items, cursors, next_cursor = page_of(rows, limit, signal_item)
            return SignalPage(items=items, next_cursor=next_cursor, item_cursors=cursors)

        return await self._db.read(query)

    async def get_signal(self, signal_id: str) -> Signal | None:
        def query(conn: sqlite3.Connection) -> Signal | None:
            row = conn.execute(
                f"SELECT {SIGNAL_COLUMNS} FROM signals WHERE id = ?", (signal_id,)
            ).fetchone()
            return None if row is None else stored_signal(row).signal

        return await self._db.read(query)

    async def prune(self, *, older_than_seconds: float) -> int:
        """Delete old signals in batches of at most ``prune_batch_size``, one transaction each.

        Between batches the writer serves whatever queued meanwhile (webhooks). Deleting
        a signal rewrites a random page of the id index, so a batch costs about a page
        write per row: batches shrink until each takes about PRUNE_BATCH_TARGET_SECONDS
        on this disk, and end early when another write is waiting. Then the decisions
        of the signals gone, a batch per transaction.
        """
        cutoff = utc_text(self._clock() - timedelta(seconds=older_than_seconds))
        limit = min(self._prune_batch_size, PRUNE_CHUNK_ROWS)
        total = 0
        after: int | None = 0
        while after is not None:
            batch: PruneBatch = await self._db.write(
                functools.partial(
                    prune_batch, cutoff=cutoff, after=after, limit=limit, waiting=self._db.waiting
                )
            )
            total += batch.deleted
            after = batch.next_after
            limit = next_prune_limit(batch, limit, most=self._prune_batch_size)
        more = True
        while more:
            more = await self._db.write(
                functools.partial(prune_decisions_batch, limit=DECISIONS_PRUNED_A_BATCH)
            )
        return total


# -- intake: one transaction for every request queued together ---------------------------
@dataclass(frozen=True, slots=True)
class StagedSignal:
    """A signal and its INSERT_SIGNAL parameters, made by the caller: the writer thread
    only binds them, so the event loop does not wait for the GIL while it encodes JSON."""

    id: str
    row: tuple[Any, ...]


def staged(signals: Sequence[Signal]) -> list[StagedSignal]:
    # A request's signals share one received_at: format it once per request.
    stamps: dict[int, str] = {}
    out = []
    for signal in signals:
        stamp = stamps.get(id(signal.received_at))
        if stamp is None:
            stamp = stamps[id(signal.received_at)] = utc_text(signal.received_at)
        out.append(StagedSignal(signal.id, signal_row(signal, stamp)))
    return out


def insert_signal_batches(
    conn: sqlite3.Connection, requests: Sequence[Sequence[StagedSignal]]
) -> list[list[RecordResult]]:
    """Store the new signals of every request in one transaction; results per request.

    The first occurrence of a fresh id in the batch is the one stored; every other
    occurrence (earlier commit, or earlier in this batch) is a duplicate."""
    fresh = _insert_signals(conn, [s for signals in requests for s in signals])
    claimed: set[str] = set()
    results: list[list[RecordResult]] = []
    for signals in requests:
        answer = []
        for signal in signals:
            seq = fresh.get(signal.id)
            new = seq is not None and signal.id not in claimed
            if new:
                claimed.add(signal.id)
            answer.append(RecordResult(signal_id=signal.id, duplicate=not new,
                                       seq=seq if new else None))  # fmt: skip
        results.append(answer)
    return results


def _insert_signals(conn: sqlite3.Connection, signals: list[StagedSignal]) -> dict[str, int]:
    """Store the signals whose id is new in one transaction; return their seqs by id.

    SQLite stores text and JSON as given, so each of them reads back equal to the
    signal handed in: the decider may keep them rather than read them back."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        (before,) = conn.execute("SELECT coalesce(max(seq), 0) FROM signals").fetchone()
        known = _existing_ids(conn, [s.id for s in signals])
        fresh: dict[str, tuple[Any, ...]] = {}
        for signal in signals:
            if signal.id not in known:
                fresh.setdefault(signal.id, signal.row)
        conn.executemany(INSERT_SIGNAL, list(fresh.values()))
        # A rowid range: only this transaction's rows follow the largest seq before it.
        seqs = dict(conn.execute("SELECT id, seq FROM signals WHERE seq > ?", (before,)))
        conn.execute("COMMIT")
    except BaseException:
        rollback(conn)
        raise
    return seqs


def _existing_ids(conn: sqlite3.Connection, ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(ids), _LOOKUP_CHUNK):
        chunk = ids[start : start + _LOOKUP_CHUNK]
        marks = ",".join("?" * len(chunk))
        found.update(
            row[0] for row in conn.execute(f"SELECT id FROM signals WHERE id IN ({marks})", chunk)
        )
    return found


# -- pruning ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PruneBatch:
    deleted: int
    examined: int
    next_after: int | None  # where the next batch starts; None: done
    seconds: float  # the batch's time on the writer, commit and checkpoint included


def prune_batch(
    conn: sqlite3.Connection,
    *,
    cutoff: str,
    after: int,
    limit: int,
    waiting: Callable[[], bool],
) -> PruneBatch:
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
        rollback(conn)
        raise
    # Copy the batch's pages into the database now, in the prune's turn, rather than in
    # the next webhook's commit (SQLite checkpoints in whichever commit crosses the
    # threshold). An optimisation only: a failure here leaves it to a later commit.
    with contextlib.suppress(sqlite3.Error):
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    return PruneBatch(deleted, examined, next_after, time.monotonic() - started)


def prune_decisions_batch(conn: sqlite3.Connection, *, limit: int) -> bool:
    """Delete the decisions of signals the journal no longer holds, at most ``limit``
    seqs' worth; True while more may remain.

    Nothing reads a decision but the audit of its signal, so it goes with the signal.
    Every decision below the oldest signal's seq is one whose signal was pruned (seq
    only grows); a decision among newer signals waits until they go too. The decisions
    table has no index but its key, so a range of it is cheap to delete."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        (lowest,) = conn.execute("SELECT min(signal_seq) FROM decisions").fetchone()
        (oldest_signal,) = conn.execute("SELECT min(seq) FROM signals").fetchone()
        if lowest is None or (oldest_signal is not None and lowest >= oldest_signal):
            conn.execute("COMMIT")
            return False
        upto = lowest + limit
        if oldest_signal is not None:
            upto = min(upto, oldest_signal)
        conn.execute("DELETE FROM decisions WHERE signal_seq < ?", (upto,))
        conn.execute("COMMIT")
    except BaseException:
        rollback(conn)
        raise
    return oldest_signal is None or upto < oldest_signal


def next_prune_limit(batch: PruneBatch, limit: int, *, most: int) -> int:
    """As many rows as the last batch's pace fits in the target time; at most doubling,
    so one quick batch (e.g. cut short by a waiting write) cannot overshoot."""
    if batch.examined == 0 or batch.seconds <= 0:
        return limit
    fits = int(batch.examined * PRUNE_BATCH_TARGET_SECONDS / batch.seconds)
    return max(1, min(most, limit * 2, fits))


__all__ = [
    "DEFAULT_PRUNE_BATCH_SIZE",
    "PRUNE_CHUNK_ROWS",
    "PruneBatch",
    "SqliteSignals",
    "StagedSignal",
    "insert_signal_batches",
    "next_prune_limit",
    "prune_batch",
    "prune_decisions_batch",
]
