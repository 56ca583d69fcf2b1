"""SignalStore: intake (group commit, see intake.py), listing, and pruning."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from remediator.domain.paging import check_limit, parse_cursor
from remediator.domain.signals import Signal
from remediator.journal.postgres.database import Database
from remediator.journal.postgres.intake import Intake
from remediator.journal.postgres.rows import SIGNAL_COLUMNS, signal_item, stored_signal
from remediator.ports import RecordResult, SignalPage

# One prune batch examines at most this many rows, in seq order, in one transaction.
DEFAULT_PRUNE_BATCH_SIZE = 5000

_PRUNE_BATCH = """
WITH chunk AS (
    SELECT seq, received_at FROM signals WHERE seq > $1 ORDER BY seq LIMIT $2
), gone AS (
    DELETE FROM signals s USING chunk
    WHERE s.seq = chunk.seq AND chunk.received_at < $3
    RETURNING s.seq
)
SELECT (SELECT count(*) FROM chunk) AS examined,
       (SELECT max(seq) FROM chunk) AS last_seq,
       (SELECT count(*) FROM gone) AS deleted
"""


# The decisions of signals the journal no longer holds: every one below the oldest
# signal's seq (seq only grows), at most $1 seqs' worth a statement. Nothing reads a
# decision but the audit of its signal, so it goes with the signal.
_PRUNE_DECISIONS = """
WITH bounds AS (
    SELECT (SELECT min(signal_seq) FROM decisions) AS lowest,
           (SELECT min(seq) FROM signals) AS oldest_signal
), cut AS (
    SELECT lowest, oldest_signal,
           CASE WHEN oldest_signal IS NULL THEN lowest + $1
                ELSE least(oldest_signal, lowest + $1) END AS upto
    FROM bounds
), gone AS (
    DELETE FROM decisions d USING cut WHERE d.signal_seq < cut.upto RETURNING 1
)
SELECT (SELECT count(*) FROM gone) AS deleted,
       lowest IS NOT NULL AND (oldest_signal IS NULL OR upto < oldest_signal) AS more
FROM cut
"""
DECISIONS_PRUNED_A_BATCH = 5000


@dataclass(frozen=True, slots=True)
class _PruneBatch:
    examined: int
    deleted: int
    last_seq: int | None


class PgSignalStore:
    _db: Database
    _intake: Intake
    _clock: Callable[[], datetime]
    _prune_batch_size: int

    async def record_signals(self, signals: Sequence[Signal]) -> list[RecordResult]:
        if not signals:
            return []
        return await self._intake.record(signals)

    async def list_signals(
        self, *, service: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> SignalPage:
        check_limit(limit)
        before = None if cursor is None else parse_cursor(cursor)
        clauses, params = _filters(service=service, before=before)
        sql = (
            f"SELECT {SIGNAL_COLUMNS} FROM signals {clauses}"
            f" ORDER BY seq DESC LIMIT ${len(params) + 1}"
        )

        async def query(conn: asyncpg.Connection) -> SignalPage:
            rows = await conn.fetch(sql, *params, limit + 1)
            kept = rows[:limit]
            cursors = [str(row["seq"]) for row in kept]
            return SignalPage(
                items=[signal_item(row) for row in kept],
                next_cursor=cursors[-1] if len(rows) > limit else None,
                item_cursors=cursors,
            )

        return await self._db.read("list signals", query)

    async def get_signal(self, signal_id: str) -> Signal | None:
        async def query(conn: asyncpg.Connection) -> Signal | None:
            row = await conn.fetchrow(f"SELECT {SIGNAL_COLUMNS} FROM signals WHERE id = $1",
                                      signal_id)  # fmt: skip
            return None if row is None else stored_signal(row).signal

        return await self._db.read("get signal", query)

    async def prune(self, *, older_than_seconds: float) -> int:
        """Delete signals received before the cutoff, a batch per transaction.

        Rows are examined in seq order; the prune ends at the end of the table or at the
        first batch holding no old signal: seq grows with received_at, so that is where
        the signals within retention begin. A newer signal among old ones (a clock
        stepped back) is kept, never forgotten early. No index on received_at: it would
        tax every insert on the webhook's hot path. Then the decisions of the signals
        gone, a batch per transaction.
        """
        cutoff = self._clock() - timedelta(seconds=older_than_seconds)
        total, after = 0, 0
        while True:
            batch = await self._db.write(
                "prune",
                functools.partial(
                    _prune_batch, after=after, limit=self._prune_batch_size, cutoff=cutoff
                ),
            )
            total += batch.deleted
            if batch.deleted == 0 or batch.examined < self._prune_batch_size:
                break
            assert batch.last_seq is not None
            after = batch.last_seq
        while await self._db.write("prune decisions", _prune_decisions_batch):
            pass
        return total


async def _prune_batch(
    conn: asyncpg.Connection, *, after: int, limit: int, cutoff: datetime
) -> _PruneBatch:
    row = await conn.fetchrow(_PRUNE_BATCH, after, limit, cutoff)
    assert row is not None
    return _PruneBatch(examined=row["examined"], deleted=row["deleted"], last_seq=row["last_seq"])


async def _prune_decisions_batch(conn: asyncpg.Connection) -> bool:
    """One batch of decisions of pruned signals; True while more may remain."""
    row = await conn.fetchrow(_PRUNE_DECISIONS, DECISIONS_PRUNED_A_BATCH)
    assert row is not None
    return bool(row["more"])


def _filters(*, service: str | None, before: int | None) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if service is not None:
        params.append(service)
        clauses.append(f"service = ${len(params)}")
    if before is not None:
        params.append(before)
        clauses.append(f"seq < ${len(params)}")
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), params
