"""The SQL-directory runner on its own: status, apply, revert, table shapes."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
from pydantic import SecretStr

from remediator.connectors.postgres import MigrationFailed, SqlDirRunner
from remediator.domain.errors import PermanentError
from tests.integration.postgres.conftest import execute, snapshot

pytestmark = pytest.mark.integration


async def test_status_apply_and_revert_with_our_table(db: SecretStr, migrations: Path) -> None:
    runner = SqlDirRunner(dsn=db, directory=migrations, table="ops.schema_migrations")
    await execute(db, "CREATE SCHEMA ops")
    empty = await runner.status()
    assert empty.applied == () and empty.current is None
    assert empty.pending[0] == "001_create_accounts" and len(empty.pending) == 5

    assert await runner.apply(upto="003") == (
        "001_create_accounts",
        "002_add_users_table",
        "003_add_orders",
    )
    assert await runner.apply(upto="002") == ()  # already there: nothing more
    conn = await asyncpg.connect(db.get_secret_value())
    try:
        columns = await conn.fetch(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = 'ops' AND table_name = 'schema_migrations' ORDER BY 1"
        )
    finally:
        await conn.close()
    assert [tuple(c) for c in columns] == [
        ("applied_at", "timestamp with time zone"),
        ("version", "text"),
    ]

    result = await runner.revert_last()
    assert result.reverted == ("003_add_orders",) and result.current == "002_add_users_table"
    with pytest.raises(PermanentError, match="no migration '009'"):
        await runner.revert_to("009")
    with pytest.raises(PermanentError, match="004_add_users_email_index is not applied"):
        await runner.revert_to("004")
    assert (await runner.revert_to("base")).reverted == (
        "002_add_users_table",
        "001_create_accounts",
    )
    with pytest.raises(PermanentError, match="no applied migration"):
        await runner.revert_last()


async def test_a_rails_like_table_with_numbers_only(db: SecretStr, migrations: Path) -> None:
    await execute(
        db,
        "CREATE TABLE schema_migrations (version character varying NOT NULL UNIQUE);"
        + (migrations / "001_create_accounts.up.sql").read_text()
        + "INSERT INTO schema_migrations VALUES ('001');",
    )
    runner = SqlDirRunner(dsn=db, directory=migrations)
    assert (await runner.status()).applied == ("001_create_accounts",)
    await runner.apply(upto="004")

    result = await runner.revert_to("002_add_users_table")

    assert result.reverted == ("004_add_users_email_index", "003_add_orders")
    conn = await asyncpg.connect(db.get_secret_value())
    try:
        versions = [
            r[0] for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")
        ]
    finally:
        await conn.close()
    assert versions == ["001", "002"]  # the table's own style was kept


async def test_an_applied_migration_without_files_is_never_guessed(
    db: SecretStr, migrations: Path
) -> None:
    runner = SqlDirRunner(dsn=db, directory=migrations)
    await runner.apply(upto="002")
    await execute(db, "INSERT INTO schema_migrations (version) VALUES ('007_from_a_newer_release')")
    before = await snapshot(db)
    status = await runner.status()
    assert status.unknown == ("007_from_a_newer_release",)
    assert status.current == "007_from_a_newer_release"

    with pytest.raises(MigrationFailed, match="007_from_a_newer_release has no files"):
        await runner.revert_to("001")
    assert await snapshot(db) == before  # checked before the first step, not half-way
