"""JournalLifecycle on SQLite: open, close, liveness, and this instance's heartbeat."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from datetime import datetime

from remediator.domain.errors import TemporaryError
from remediator.domain.lifecycle import utc_text
from remediator.journal.sqlite.database import Role, SqliteDatabase

# Below this much free space the readiness probe fails even if its small write
# would still fit: WAL space left over from earlier commits lets a heartbeat succeed
# on a full disk while a webhook's larger batch cannot.
MIN_FREE_BYTES = 1024 * 1024


class SqliteLifecycle(Role):
    def __init__(
        self,
        db: SqliteDatabase,
        *,
        instance: str,
        clock: Callable[[], datetime],
        min_free_bytes: int = MIN_FREE_BYTES,
    ) -> None:
        Role.__init__(self, db)  # explicit: composed by multiple inheritance
        self.instance = instance
        self._clock = clock
        self._min_free_bytes = min_free_bytes

    async def open(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    def alive(self) -> bool:
        return self._db.alive()

    async def check_writable(self) -> None:
        """Commit this instance's heartbeat: a full disk, a read-only filesystem or a
        lock fails it. Executors read heartbeats to tell a dead instance's claims."""
        beat_at = utc_text(self._clock())

        def beat(conn: sqlite3.Connection) -> None:
            self._check_free_space()
            conn.execute(
                "INSERT INTO heartbeats (instance, beat_at) VALUES (?, ?)"
                " ON CONFLICT (instance) DO UPDATE SET beat_at = excluded.beat_at",
                (self.instance, beat_at),
            )

        await self._db.transaction(beat)

    def _check_free_space(self) -> None:
        try:
            stat = os.statvfs(self._db.path.parent)
        except OSError as exc:
            raise TemporaryError(f"journal filesystem: {exc}", delay=1.0) from exc
        free = stat.f_bavail * stat.f_frsize
        if free < self._min_free_bytes:
            raise TemporaryError(
                f"journal filesystem nearly full: {free} bytes free, "
                f"at least {self._min_free_bytes} needed",
                delay=1.0,
            )
