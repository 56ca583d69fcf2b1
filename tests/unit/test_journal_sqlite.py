from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from remediator.domain.errors import PermanentError, TemporaryError
from remediator.domain.signals import Signal, Source, Status
from remediator.journal.sqlite import SqliteJournal

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


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[SqliteJournal]:
    j = SqliteJournal(path=tmp_path / "var" / "journal.db", busy_timeout_ms=100)
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
    old = datetime.now(UTC) - timedelta(hours=30)
    await journal.record_signals([make_signal(1, received_at=old), make_signal(2)])
    assert await journal.prune(older_than_seconds=24 * 3600) == 1
    assert [r.duplicate for r in await journal.record_signals([make_signal(1)])] == [False]


async def test_unusable_path_fails_open_with_the_path(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    j = SqliteJournal(path=tmp_path / "file" / "journal.db")
    with pytest.raises((PermanentError, OSError)):
        await j.open()
