"""SlackThreads: where each remediation's Slack message is."""

from __future__ import annotations

import asyncpg

from remediator.domain.notices import SlackMessageRef
from remediator.journal.postgres.database import Database


class PgSlackThreads:
    _db: Database

    async def slack_ref(self, remediation_id: str) -> SlackMessageRef | None:
        async def query(conn: asyncpg.Connection) -> SlackMessageRef | None:
            row = await conn.fetchrow(
                "SELECT channel, ts FROM slack_messages WHERE remediation_id = $1",
                remediation_id,
            )
            return None if row is None else SlackMessageRef(channel=row["channel"], ts=row["ts"])

        return await self._db.read("read slack message", query)

    async def save_slack_ref(self, remediation_id: str, ref: SlackMessageRef) -> None:
        async def write(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "INSERT INTO slack_messages (remediation_id, channel, ts) VALUES ($1, $2, $3)"
                " ON CONFLICT (remediation_id) DO UPDATE"
                " SET channel = excluded.channel, ts = excluded.ts",
                remediation_id,
                ref.channel,
                ref.ts,
            )

        await self._db.write("save slack message", write)
