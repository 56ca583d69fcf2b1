"""Outbox on SQLite: messages to publish, leased to one relay at a time.

``pending`` leases the rows it returns to the asking relay, so another replica's
relay does not publish them meanwhile; a lease that expires (its relay died between
lease and mark) is offered again, flagged ``maybe_sent`` (its lease was never cleared),
so the relay asks the channel before publishing it again. Rows after one leased by
another relay are not offered either: a channel is relayed in order, by one relay at a
time. ``renew_lease`` is the relay's last check before publishing (one writer thread
orders it with every ``pending``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta

from remediator.domain.lifecycle import utc_text
from remediator.journal.sqlite.database import Role
from remediator.journal.sqlite.rows import PENDING_COLUMNS, insert_outbox, pending_message
from remediator.ports import OutboxMessage, PendingMessage

_ERROR_CHARS = 1000
_LAST_SEQ = 2**63 - 1


class SqliteOutbox(Role):
    async def enqueue(self, messages: Sequence[OutboxMessage]) -> None:
        if messages:
            await self._db.transaction(lambda conn: insert_outbox(conn, messages))

    async def pending(
        self, *, channel: str, limit: int, holder: str, at: datetime, lease_seconds: float
    ) -> list[PendingMessage]:
        now = utc_text(at)
        until = utc_text(at + timedelta(seconds=lease_seconds))

        def lease(conn: sqlite3.Connection) -> list[PendingMessage]:
            rows = conn.execute(
                f"SELECT {PENDING_COLUMNS} FROM outbox"
                " WHERE channel = ? AND published_at IS NULL AND seq < coalesce(("
                "   SELECT min(seq) FROM outbox WHERE channel = ? AND published_at IS NULL"
                "   AND lease_until > ? AND leased_by != ?), ?)"
                " ORDER BY seq LIMIT ?",
                (channel, channel, now, holder, _LAST_SEQ, limit),
            ).fetchall()
            conn.executemany(
                "UPDATE outbox SET leased_by = ?, lease_until = ? WHERE seq = ?",
                [(holder, until, row[0]) for row in rows],
            )
            return [pending_message(row) for row in rows]

        leased: list[PendingMessage] = await self._db.transaction(lease)
        return leased

    async def renew_lease(
        self,
        *,
        channel: str,
        ids: Sequence[str],
        holder: str,
        at: datetime,
        lease_seconds: float,
    ) -> bool:
        wanted = sorted(set(ids))
        until = utc_text(at + timedelta(seconds=lease_seconds))

        def renew(conn: sqlite3.Connection) -> bool:
            marks = ",".join("?" * len(wanted))
            held = conn.execute(
                f"SELECT count(*) FROM outbox WHERE id IN ({marks}) AND channel = ?"
                " AND published_at IS NULL AND leased_by = ?",
                (*wanted, channel, holder),
            ).fetchone()[0]
            if held != len(wanted):
                return False
            conn.execute(
                f"UPDATE outbox SET lease_until = ? WHERE id IN ({marks})", (until, *wanted)
            )
            return True

        if not wanted:
            return True
        renewed: bool = await self._db.transaction(renew)
        return renewed

    async def mark_published(self, *, ids: Sequence[str], at: datetime) -> None:
        stamp = utc_text(at)
        await self._db.transaction(
            lambda conn: conn.executemany(
                "UPDATE outbox SET published_at = ?, leased_by = NULL, lease_until = NULL"
                " WHERE id = ? AND published_at IS NULL",
                [(stamp, i) for i in ids],
            )
        )

    async def mark_failed_attempt(
        self, *, ids: Sequence[str], error: str, holder: str | None = None
    ) -> None:
        def mark(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ? WHERE id = ?",
                [(error[:_ERROR_CHARS], i) for i in ids],
            )
            conn.executemany(
                "UPDATE outbox SET leased_by = NULL, lease_until = NULL"
                " WHERE id = ? AND (? IS NULL OR leased_by = ?)",
                [(i, holder, holder) for i in ids],
            )

        await self._db.transaction(mark)

    async def mark_dead(self, *, ids: Sequence[str], error: str, at: datetime) -> None:
        stamp = utc_text(at)
        await self._db.transaction(
            lambda conn: conn.executemany(
                "UPDATE outbox SET published_at = ?, attempts = attempts + 1, last_error = ?,"
                " leased_by = NULL, lease_until = NULL WHERE id = ?",
                [(stamp, f"dead: {error}"[:_ERROR_CHARS], i) for i in ids],
            )
        )

    async def outbox_backlog(self) -> dict[str, int]:
        def query(conn: sqlite3.Connection) -> dict[str, int]:
            rows = conn.execute(
                "SELECT channel, count(*) FROM outbox WHERE published_at IS NULL GROUP BY channel"
            ).fetchall()
            return {channel: count for channel, count in rows}

        return await self._db.read(query)
