"""Journal helpers for tests: holding the SQLite journal's writer thread, so tests can
line jobs up behind it; reading the outbox without leasing it."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator

from remediator.domain.errors import TemporaryError
from remediator.journal.sqlite import SqliteJournal
from remediator.journal.sqlite.rows import PENDING_COLUMNS, pending_message
from remediator.ports import PendingMessage


@contextlib.asynccontextmanager
async def writer_held(journal: SqliteJournal) -> AsyncIterator[None]:
    """The writer is busy with one job until the block ends; other jobs queue behind it."""
    started, release = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        started.set()
        release.wait(timeout=30)

    holder = asyncio.create_task(journal.database.write(hold))
    try:
        assert await asyncio.to_thread(started.wait, 30), "the writer never took the job"
        yield
    finally:
        release.set()
        with contextlib.suppress(TemporaryError):  # its own deadline may have passed
            await holder


async def outbox_messages(
    journal: SqliteJournal, channel: str, *, limit: int = 100
) -> list[PendingMessage]:
    """What waits in one channel of the outbox, oldest first: read only, so no relay's
    lease is taken or changed (``pending`` would lease what it returns)."""
    rows = await journal.database.read(
        lambda conn: conn.execute(
            f"SELECT {PENDING_COLUMNS} FROM outbox"
            " WHERE channel = ? AND published_at IS NULL ORDER BY seq LIMIT ?",
            (channel, limit),
        ).fetchall()
    )
    return [pending_message(row) for row in rows]
