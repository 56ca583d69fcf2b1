"""Journal helpers for tests: holding the SQLite journal's writer thread, so tests can
line jobs up behind it; reading the outbox without leasing it."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from remediator.domain.errors import TemporaryError
from remediator.journal.sqlite import SqliteJournal
from remediator.ports import Outbox, PendingMessage


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


# Leases taken at the epoch for no time: reading this way never holds a message back
# from a relay (any relay's clock is past the lease).
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


async def outbox_messages(
    journal: Outbox, channel: str, *, limit: int = 100
) -> list[PendingMessage]:
    """What waits in one channel of the outbox, oldest first, read without holding it."""
    return await journal.pending(
        channel=channel, limit=limit, holder="test-reader", at=_EPOCH, lease_seconds=0
    )
