"""Outbox: messages to publish, relayed in order by one relay at a time.

``pending`` leases the rows it returns (leased_by, lease_until), so another replica's
relay does not publish them meanwhile. Rows after one leased by another relay are not
offered either: a channel is relayed in order, by one relay at a time (the lease
transactions of a channel take its advisory lock, so two relays cannot both find the
channel free). A relay that stops between publishing and ``mark_published`` leaves its
lease to expire; the message is then offered again, flagged ``maybe_sent``, and the
relay asks the channel whether it is there before publishing it again.
``renew_lease`` takes the channel's advisory lock too, so a renewal and another
relay's lease of the same rows cannot both succeed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import asyncpg

from remediator.journal.postgres.database import Database
from remediator.journal.postgres.migrate import advisory_key
from remediator.journal.postgres.rows import (
    INSERT_OUTBOX,
    OUTBOX_COLUMNS,
    outbox_params,
    pending_message,
    pg_text,
)
from remediator.ports import OutboxMessage, PendingMessage

ERROR_CHARS = 1000
_LAST_SEQ = 2**63 - 1

_LEASE = f"""
WITH held AS (
    SELECT min(seq) AS seq FROM outbox
    WHERE channel = $1 AND published_at IS NULL AND lease_until > $3 AND leased_by <> $4
), offered AS (
    SELECT seq, (leased_by IS NOT NULL OR attempts > 0) AS maybe_sent FROM outbox
    WHERE channel = $1 AND published_at IS NULL
      AND seq < coalesce((SELECT seq FROM held), {_LAST_SEQ})
    ORDER BY seq
    LIMIT $2
    FOR UPDATE
)
UPDATE outbox o SET leased_by = $4, lease_until = $5
FROM offered WHERE o.seq = offered.seq
RETURNING {", ".join(f"o.{c.strip()}" for c in OUTBOX_COLUMNS.split(","))}, offered.maybe_sent
"""

_HELD_BY = """
SELECT count(*) FROM (
    SELECT id FROM outbox
    WHERE id = ANY($1::text[]) AND channel = $2 AND published_at IS NULL AND leased_by = $3
    FOR UPDATE
) AS held
"""


def channel_lock(channel: str) -> int:
    return advisory_key(f"remediator.journal.outbox:{channel}")


class PgOutbox:
    _db: Database

    async def enqueue(self, messages: Sequence[OutboxMessage]) -> None:
        if not messages:
            return

        async def write(conn: asyncpg.Connection) -> None:
            await conn.execute(INSERT_OUTBOX, *outbox_params(messages))

        await self._db.write("enqueue", write)

    async def pending(
        self, *, channel: str, limit: int, holder: str, at: datetime, lease_seconds: float
    ) -> list[PendingMessage]:
        until = at + timedelta(seconds=lease_seconds)

        async def write(conn: asyncpg.Connection) -> list[PendingMessage]:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", channel_lock(channel))
            rows = await conn.fetch(_LEASE, channel, limit, at, holder, until)
            return sorted((pending_message(row) for row in rows), key=lambda p: p.seq)

        return await self._db.write("lease outbox messages", write)

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
        if not wanted:
            return True
        until = at + timedelta(seconds=lease_seconds)

        async def write(conn: asyncpg.Connection) -> bool:
            # The channel's lock orders this with every pending() of the channel.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", channel_lock(channel))
            held = await conn.fetchval(_HELD_BY, wanted, channel, holder)
            if held != len(wanted):
                return False
            await conn.execute(
                "UPDATE outbox SET lease_until = $2 WHERE id = ANY($1::text[])", wanted, until
            )
            return True

        renewed: bool = await self._db.write("renew outbox lease", write)
        return renewed

    async def mark_published(self, *, ids: Sequence[str], at: datetime) -> None:
        if not ids:
            return

        async def write(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "UPDATE outbox SET published_at = $2, leased_by = NULL, lease_until = NULL"
                " WHERE id = ANY($1::text[]) AND published_at IS NULL",
                list(ids),
                at,
            )

        await self._db.write("mark published", write)

    async def mark_failed_attempt(
        self, *, ids: Sequence[str], error: str, holder: str | None = None
    ) -> None:
        if not ids:
            return

        async def write(conn: asyncpg.Connection) -> None:
            # The lease is released only if it is still the failing holder's (or no
            # holder was named); the attempt counts either way.
            await conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = $2,"
                " leased_by = CASE WHEN $3::text IS NULL OR leased_by = $3"
                "   THEN NULL ELSE leased_by END,"
                " lease_until = CASE WHEN $3::text IS NULL OR leased_by = $3"
                "   THEN NULL ELSE lease_until END"
                " WHERE id = ANY($1::text[])",
                list(ids),
                pg_text(error[:ERROR_CHARS]),
                holder,
            )

        await self._db.write("mark failed attempt", write)

    async def mark_dead(self, *, ids: Sequence[str], error: str, at: datetime) -> None:
        if not ids:
            return

        async def write(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "UPDATE outbox SET published_at = $2, attempts = attempts + 1,"
                " last_error = $3, leased_by = NULL, lease_until = NULL"
                " WHERE id = ANY($1::text[])",
                list(ids),
                at,
                pg_text(f"dead: {error}"[:ERROR_CHARS]),
            )

        await self._db.write("mark dead", write)

    async def outbox_backlog(self) -> dict[str, int]:
        async def query(conn: asyncpg.Connection) -> dict[str, int]:
            rows = await conn.fetch(
                "SELECT channel, count(*) AS n FROM outbox WHERE published_at IS NULL"
                " GROUP BY channel"
            )
            return {row["channel"]: row["n"] for row in rows}

        return await self._db.read("read outbox backlog", query)
