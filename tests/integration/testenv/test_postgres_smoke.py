"""asyncpg talks to the PostgreSQL peer over TCP with password auth."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

pytestmark = pytest.mark.integration


async def test_query_round_trip(postgres: Any) -> None:
    conn = await asyncpg.connect(postgres.endpoints["postgres_dsn"], timeout=10)
    try:
        await conn.execute("CREATE TEMP TABLE journal (id serial PRIMARY KEY, note text)")
        await conn.execute("INSERT INTO journal (note) VALUES ($1), ($2)", "rollback", "done")
        rows = await conn.fetch("SELECT note FROM journal ORDER BY id")
        version = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    assert [r["note"] for r in rows] == ["rollback", "done"]
    assert version.startswith(postgres.endpoints["versions"]["postgresql"].split(".")[0])


async def test_wrong_password_is_rejected(postgres: Any) -> None:
    dsn = postgres.endpoints["postgres_dsn"].replace(":remediator-test-password@", ":nope@")
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(dsn, timeout=10)
