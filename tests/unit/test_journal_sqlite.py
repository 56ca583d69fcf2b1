from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from remediator.domain.errors import PermanentError, TemporaryError
from remediator.domain.failpoints import Failpoints
from remediator.domain.signals import Signal, Source, Status
from remediator.journal.sqlite import SqliteJournal
from remediator.journal.sqlite.signals import (
    PRUNE_CHUNK_ROWS,
    PruneBatch,
    next_prune_limit,
    prune_batch,
)
from tests.polling import eventually
from tests.unit.journal_helpers import writer_held

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def make_signal(n: int, *, service: str | None = "checkout", received_at: datetime = NOW) -> Signal:
    return Signal(
        key=f"k{n}",
        source=Source.ALERTMANAGER,
        kind="HighErrorRate",
        status=Status.FIRING,
        service=service,
        namespace="shop",
        labels={"alertname": "HighErrorRate", "n": str(n)},
        annotations={},
        starts_at=NOW,
        ends_at=None,
        received_at=received_at,
        raw={"n": n},
    )


class Clock:
    """The journal's wall clock, set by the test."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def journal(tmp_path: Path, clock: Clock) -> AsyncIterator[SqliteJournal]:
    j = SqliteJournal(path=tmp_path / "var" / "journal.db", busy_timeout_ms=100, clock=clock)
    await j.open()
    yield j
    await j.close()


async def test_new_keys_are_stored_and_replays_are_duplicates(journal: SqliteJournal) -> None:
    first = await journal.record_signals([make_signal(1), make_signal(2)])
    assert [r.duplicate for r in first] == [False, False]
    again = await journal.record_signals([make_signal(2), make_signal(3)])
    assert [r.duplicate for r in again] == [True, False]
    assert again[0].signal_id == first[1].signal_id
    page = await journal.list_signals(limit=10)
    assert [item["labels"]["n"] for item in page.items] == ["3", "2", "1"]


async def test_duplicates_within_one_call_are_stored_once(journal: SqliteJournal) -> None:
    results = await journal.record_signals([make_signal(7), make_signal(7)])
    assert [r.duplicate for r in results] == [False, True]
    assert len((await journal.list_signals(limit=10)).items) == 1


async def test_concurrent_writers_share_commits_and_nothing_is_lost(journal: SqliteJournal) -> None:
    # 50 concurrent callers, overlapping keys: group commit must keep per-caller results right.
    async def caller(i: int) -> list[bool]:
        results = await journal.record_signals([make_signal(i), make_signal(i % 10)])
        return [r.duplicate for r in results]

    outcomes = await asyncio.gather(*(caller(i) for i in range(50)))
    stored = await journal.list_signals(limit=1000)
    assert len(stored.items) == 50
    new_count = sum(not d for outcome in outcomes for d in outcome)
    assert new_count == 50  # every key stored exactly once across all callers


async def test_paging_is_newest_first_and_filters_by_service(journal: SqliteJournal) -> None:
    await journal.record_signals([make_signal(i, service="a" if i % 2 else "b") for i in range(7)])
    page1 = await journal.list_signals(service="a", limit=2)
    assert [i["labels"]["n"] for i in page1.items] == ["5", "3"]
    assert page1.next_cursor is not None
    page2 = await journal.list_signals(service="a", limit=2, cursor=page1.next_cursor)
    assert [i["labels"]["n"] for i in page2.items] == ["1"]
    assert page2.next_cursor is None


async def test_bad_cursor_is_a_permanent_error(journal: SqliteJournal) -> None:
    with pytest.raises(PermanentError, match="cursor"):
        await journal.list_signals(cursor="abc")


async def test_signals_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    j = SqliteJournal(path=path)
    await j.open()
    await j.record_signals([make_signal(1)])
    await j.close()
    j2 = SqliteJournal(path=path)
    await j2.open()
    try:
        assert [r.duplicate for r in await j2.record_signals([make_signal(1)])] == [True]
    finally:
        await j2.close()


async def test_locked_database_is_a_temporary_error_then_recovers(
    journal: SqliteJournal, tmp_path: Path
) -> None:
    other = sqlite3.connect(tmp_path / "var" / "journal.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(TemporaryError):
            await journal.record_signals([make_signal(1)])
        with pytest.raises(TemporaryError):
            await journal.check_writable()
    finally:
        other.execute("ROLLBACK")
        other.close()
    await journal.check_writable()
    assert [r.duplicate for r in await journal.record_signals([make_signal(1)])] == [False]


async def test_prune_forgets_old_signals_and_their_keys(journal: SqliteJournal) -> None:
    # The journal's clock says NOW whatever day the test runs.
    old = NOW - timedelta(hours=30)
    await journal.record_signals([make_signal(1, received_at=old), make_signal(2)])
    assert await journal.prune(older_than_seconds=24 * 3600) == 1
    again = await journal.record_signals([make_signal(1), make_signal(2)])
    assert [r.duplicate for r in again] == [False, True]


async def test_unusable_path_fails_open_with_the_path(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    j = SqliteJournal(path=tmp_path / "file" / "journal.db")
    with pytest.raises((PermanentError, OSError)):
        await j.open()


async def test_alive_only_while_open(tmp_path: Path) -> None:
    j = SqliteJournal(path=tmp_path / "j.db")
    assert not j.alive()
    await j.open()
    assert j.alive()
    await j.close()
    assert not j.alive()
    with pytest.raises(TemporaryError, match="not open"):
        await j.record_signals([make_signal(1)])
    await j.open()
    try:
        assert j.alive()
        assert [r.duplicate for r in await j.record_signals([make_signal(1)])] == [False]
    finally:
        await j.close()


async def test_a_writer_stuck_in_one_job_is_not_alive_until_it_moves_again(
    tmp_path: Path,
) -> None:
    now = [1000.0]
    j = SqliteJournal(path=tmp_path / "j.db", call_timeout_seconds=5.0, monotonic=lambda: now[0])
    await j.open()
    try:
        async with writer_held(j):  # e.g. an fsync that never returns
            now[0] += 59.0
            assert j.alive()  # slow is not hung: 12 journal deadlines are allowed
            now[0] += 2.0
            assert not j.alive()  # /healthz fails, the pod is restarted
        assert j.alive()  # the job ended: the writer moves again
        assert [r.duplicate for r in await j.record_signals([make_signal(7)])] == [False]
    finally:
        await j.close()


# -- prune ---------------------------------------------------------------------------
async def test_prune_deletes_in_batches_and_other_writes_interleave(
    tmp_path: Path, clock: Clock
) -> None:
    j = SqliteJournal(path=tmp_path / "j.db", clock=clock, prune_batch_size=2)
    await j.open()
    try:
        old = NOW - timedelta(days=10)
        await j.record_signals([make_signal(i, received_at=old) for i in range(7)])
        await j.record_signals([make_signal(100)])
        async with writer_held(j):
            prune = asyncio.create_task(j.prune(older_than_seconds=24 * 3600))
            await asyncio.sleep(0)  # the prune's first batch is queued ...
            other = asyncio.create_task(
                j.database.write(
                    lambda conn: conn.execute("SELECT count(*) FROM signals").fetchone()[0]
                )
            )
            await asyncio.sleep(0)  # ... and another write right behind it
        # That write ran after the first batch (2 of 7 old gone) and before the rest.
        assert await other == 8 - 2
        assert await prune == 7
        again = await j.record_signals([make_signal(0), make_signal(6), make_signal(100)])
        assert [r.duplicate for r in again] == [False, False, True]
    finally:
        await j.close()


async def test_prune_keeps_a_newer_signal_among_old_ones(journal: SqliteJournal) -> None:
    # The clock stepped back: a signal journaled later carries an older received_at.
    # Whatever the order, only signals older than the cutoff go.
    old = NOW - timedelta(days=10)
    await journal.record_signals([make_signal(1, received_at=old)])
    await journal.record_signals([make_signal(2)])
    await journal.record_signals([make_signal(3, received_at=old)])
    assert await journal.prune(older_than_seconds=24 * 3600) == 2
    page = await journal.list_signals(limit=10)
    assert [item["labels"]["n"] for item in page.items] == ["2"]


async def test_prune_follows_the_injected_clock(journal: SqliteJournal, clock: Clock) -> None:
    await journal.record_signals([make_signal(1)])
    assert await journal.prune(older_than_seconds=3600) == 0
    clock.now = NOW + timedelta(hours=2)
    assert await journal.prune(older_than_seconds=3600) == 1


async def test_a_prune_batch_ends_after_one_chunk_when_another_write_waits(
    journal: SqliteJournal,
) -> None:
    old = NOW - timedelta(days=10)
    await journal.record_signals(
        [make_signal(i, received_at=old) for i in range(PRUNE_CHUNK_ROWS * 3)]
    )
    cutoff = "2026-11-26T10:00:00.000000Z"
    batch = await journal.database.write(
        lambda conn: prune_batch(
            conn, cutoff=cutoff, after=0, limit=PRUNE_CHUNK_ROWS * 3, waiting=lambda: True
        )
    )
    assert (batch.deleted, batch.examined) == (PRUNE_CHUNK_ROWS, PRUNE_CHUNK_ROWS)
    assert batch.next_after == PRUNE_CHUNK_ROWS  # seq of the last row it deleted
    rest = await journal.database.write(
        lambda conn: prune_batch(
            conn, cutoff=cutoff, after=batch.next_after, limit=10_000, waiting=lambda: False
        )
    )
    assert (rest.deleted, rest.next_after) == (PRUNE_CHUNK_ROWS * 2, None)


@pytest.mark.parametrize(
    ("examined", "seconds", "limit", "expected"),
    [
        (200, 0.001, 200, 400),  # quick: at most double
        (200, 0.001, 4000, 5000),  # never above the setting
        (1000, 0.1, 1000, 300),  # slow: what fits in the 30 ms target
        (1, 10.0, 1000, 1),  # very slow: still at least one row per batch
        (0, 0.0, 700, 700),  # nothing examined: nothing learned
    ],
)
def test_prune_batches_adapt_to_the_time_they_take(
    examined: int, seconds: float, limit: int, expected: int
) -> None:
    batch = PruneBatch(deleted=examined, examined=examined, next_after=None, seconds=seconds)
    assert next_prune_limit(batch, limit, most=5000) == expected


# -- faults: every job settled, deadlines, a dead writer ------------------------------
async def test_an_unexpected_error_in_a_job_fails_that_call_only(
    journal: SqliteJournal, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        raise ZeroDivisionError("a bug in one journal call")

    with (
        caplog.at_level(logging.ERROR, logger="remediator.journal.sqlite"),
        pytest.raises(PermanentError, match="ZeroDivisionError"),
    ):
        await journal.database.write(broken)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "ZeroDivisionError" in errors[0].getMessage()
    # The writer rolled back and goes on serving.
    assert journal.alive()
    assert [r.duplicate for r in await journal.record_signals([make_signal(1)])] == [False]
    await journal.check_writable()


async def test_a_signal_the_journal_cannot_store_fails_only_its_own_request(
    journal: SqliteJournal,
) -> None:
    poison = replace(make_signal(1), raw={"n": 2**70})  # beyond what JSON encoding takes
    async with writer_held(journal):
        # Both requests wait in the queue, so the writer commits them together.
        bad = asyncio.create_task(journal.record_signals([poison]))
        good = asyncio.create_task(journal.record_signals([make_signal(2)]))
        await asyncio.sleep(0)
    with pytest.raises(PermanentError, match="TypeError"):
        await bad
    assert [r.duplicate for r in await good] == [False]
    page = await journal.list_signals(limit=10)
    assert [item["labels"]["n"] for item in page.items] == ["2"]
    assert journal.alive()


@pytest.fixture
async def doomed(tmp_path: Path) -> AsyncIterator[SqliteJournal]:
    """A journal whose writer dies of a bug outside any job (the journal.writer failpoint)
    when it takes up a write of service ``doomed``."""
    j = SqliteJournal(path=tmp_path / "j.db", failpoints=Failpoints.parse("journal.writer:doomed"))
    await j.open()
    yield j
    await j.close()


async def test_a_dead_writer_fails_every_call_at_once_and_says_so(doomed: SqliteJournal) -> None:
    assert [r.duplicate for r in await doomed.record_signals([make_signal(0)])] == [False]
    async with writer_held(doomed):
        calls = [
            asyncio.create_task(doomed.record_signals([make_signal(i, service="doomed")]))
            for i in range(1, 6)
        ]
        await asyncio.sleep(0)
    # Settled by the dying writer, not by their deadline (5 s): the message says why.
    for outcome in await asyncio.gather(*calls, return_exceptions=True):
        assert isinstance(outcome, TemporaryError)
        assert "writer stopped (InjectedFault" in str(outcome)
    assert not doomed.alive()
    with pytest.raises(TemporaryError, match="writer stopped"):
        await doomed.record_signals([make_signal(9)])
    with pytest.raises(TemporaryError, match="writer stopped"):
        await doomed.check_writable()


async def test_a_write_past_its_deadline_is_temporary_and_a_started_one_stands(
    tmp_path: Path,
) -> None:
    j = SqliteJournal(path=tmp_path / "j.db", call_timeout_seconds=1.0)
    await j.open()
    started, release = threading.Event(), threading.Event()

    def slow_write(conn: sqlite3.Connection) -> None:
        started.set()
        release.wait(timeout=30)
        conn.execute("INSERT INTO heartbeats (instance, beat_at) VALUES ('test', 'late')")

    try:
        slow = asyncio.create_task(j.database.write(slow_write))
        assert await asyncio.to_thread(started.wait, 30)
        queued = asyncio.create_task(j.record_signals([make_signal(1)]))
        with pytest.raises(TemporaryError, match="took longer than 1s"):
            await slow
        with pytest.raises(TemporaryError, match="took longer than 1s"):
            await queued
        release.set()
        # The write already running completed; the one still queued was never started.
        again = await j.record_signals([make_signal(1)])
        assert [r.duplicate for r in again] == [False]
        beats = await j.database.read(
            lambda conn: conn.execute("SELECT beat_at FROM heartbeats").fetchall()
        )
        assert beats == [("late",)]
        assert j.alive()
    finally:
        release.set()
        await j.close()


async def test_a_read_past_its_deadline_is_interrupted_and_the_reader_recovers(
    tmp_path: Path,
) -> None:
    j = SqliteJournal(path=tmp_path / "j.db", call_timeout_seconds=0.3)
    await j.open()

    def endless(conn: sqlite3.Connection) -> object:
        return conn.execute(
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
        ).fetchone()

    try:
        with pytest.raises(TemporaryError):
            await j.database.read(endless)
        # Had the endless query kept the reader, this would wait out its deadline.
        assert (await j.list_signals(limit=5)).items == []
    finally:
        await j.close()


# -- readiness probe -------------------------------------------------------------------
async def test_check_writable_commits_a_heartbeat(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "j.db"
    j = SqliteJournal(path=path, clock=clock, instance="replica-a")
    await j.open()
    try:
        await j.check_writable()
        clock.now = NOW + timedelta(seconds=10)
        await j.check_writable()
    finally:
        await j.close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT instance, beat_at FROM heartbeats").fetchall()
    assert rows == [("replica-a", "2026-11-27T10:00:10.000000Z")]


async def test_check_writable_fails_while_the_filesystem_is_nearly_full(tmp_path: Path) -> None:
    j = SqliteJournal(path=tmp_path / "j.db", min_free_bytes=2**62)
    await j.open()
    try:
        with pytest.raises(TemporaryError, match="nearly full"):
            await j.check_writable()
        assert j.alive()
    finally:
        await j.close()


def checkpointed_ids(path: Path) -> set[str] | None:
    """The signal ids in the database file itself, without its WAL: what checkpoints
    copied there (read from a copy, so the journal's own WAL is left alone). None when
    the copy caught a checkpoint halfway through writing the file."""
    copy = path.with_name("checkpointed.db")
    copy.write_bytes(path.read_bytes())
    conn = sqlite3.connect(copy)
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        if "signals" not in tables:
            return set()
        return {row[0] for row in conn.execute("SELECT id FROM signals")}
    except sqlite3.DatabaseError:
        return None
    finally:
        conn.close()
        copy.unlink()


async def test_the_writer_checkpoints_in_a_lull_at_most_once_a_second(tmp_path: Path) -> None:
    """Copying the WAL into the database is done while nothing waits for the writer,
    rather than in whichever commit crosses SQLite's threshold."""
    now = [0.0]
    path = tmp_path / "journal.db"
    journal = SqliteJournal(path=path, monotonic=lambda: now[0])
    await journal.open()
    try:
        [first] = await journal.record_signals([make_signal(1)])
        now[0] += 0.5
        [second] = await journal.record_signals([make_signal(2)])
        # Served after the second write's lull, at the same time: when it returns, that
        # lull is over; within a second of the writer's start, it copied nothing.
        [third] = await journal.record_signals([make_signal(3)])
        assert checkpointed_ids(path) == set()
        now[0] += 0.5  # a second after the writer started: the next lull copies all
        [fourth] = await journal.record_signals([make_signal(4)])
        everything = {r.signal_id for r in (first, second, third, fourth)}
        await eventually(lambda: asyncio.to_thread(checkpointed_ids, path),
                         lambda ids: ids == everything, timeout=10, interval=0.01,
                         what="the lull's checkpoint")  # fmt: skip
    finally:
        await journal.close()
