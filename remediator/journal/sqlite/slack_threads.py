"""SlackThreads on SQLite: where each remediation's Slack message is."""

from __future__ import annotations

import sqlite3

from remediator.domain.notices import SlackMessageRef
from remediator.journal.sqlite.database import Role


class SqliteSlackThreads(Role):
    async def slack_ref(self, remediation_id: str) -> SlackMessageRef | None:
        def query(conn: sqlite3.Connection) -> SlackMessageRef | None:
            row = conn.execute(
                "SELECT channel, ts FROM slack_messages WHERE remediation_id = ?",
                (remediation_id,),
            ).fetchone()
            return None if row is None else SlackMessageRef(channel=row[0], ts=row[1])

        return await self._db.read(query)

    async def save_slack_ref(self, remediation_id: str, ref: SlackMessageRef) -> None:
        await self._db.write(
            lambda conn: conn.execute(
                "INSERT OR REPLACE INTO slack_messages (remediation_id, channel, ts)"
                " VALUES (?, ?, ?)",
                (remediation_id, ref.channel, ref.ts),
            )
        )
