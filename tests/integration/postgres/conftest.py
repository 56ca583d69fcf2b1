"""A fresh database per test on the session's PostgreSQL, and ways to compare states."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from pydantic import SecretStr

from remediator.connectors.postgres import SqlDirRunner
from remediator.connectors.postgres.dsn import with_database

HERE = Path(__file__).parent
SQL_MIGRATIONS = HERE / "sql_migrations"
ALEMBIC_PROJECT = HERE / "alembic_project"


@pytest.fixture
async def db(postgres: Any) -> AsyncIterator[SecretStr]:
    """DSN of a new, empty database; dropped afterwards (even if a test left sessions)."""
    admin_dsn = postgres.endpoints["postgres_dsn"]
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield with_database(SecretStr(admin_dsn), name)
    admin = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def migrations(tmp_path: Path) -> Path:
    """A private copy of the SQL migrations, for tests that edit a script."""
    target = tmp_path / "migrations"
    shutil.copytree(SQL_MIGRATIONS, target)
    return target


@pytest.fixture
def backups(tmp_path: Path) -> Path:
    return tmp_path / "backups"


@pytest.fixture
def clock() -> Callable[[], datetime]:
    return lambda: datetime.now(UTC)


async def seed(dsn: SecretStr) -> None:
    """Rows in accounts, users and orders (schema at 004 or later)."""
    conn = await asyncpg.connect(dsn.get_secret_value(), timeout=10)
    try:
        await conn.execute(
            """
            INSERT INTO accounts (name) VALUES ('acme'), ('globex');
            INSERT INTO users (account_id, email, name)
            SELECT 1 + g % 2, 'user' || g || '@' || (CASE WHEN g % 3 = 0 THEN 'b.example'
                   ELSE 'a.example' END), 'User ' || g
            FROM generate_series(1, 40) g;
            INSERT INTO orders (user_id, amount_cents, note)
            SELECT 1 + g % 40, g * 137, CASE WHEN g % 5 = 0 THEN NULL ELSE 'order ' || g END
            FROM generate_series(1, 120) g;
            """
        )
    finally:
        await conn.close()


_COLUMNS = """
SELECT table_name, column_name, data_type, is_nullable, column_default
FROM information_schema.columns WHERE table_schema = 'public'
ORDER BY table_name, ordinal_position
"""
_INDEXES = "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1, 2"
_CONSTRAINTS = """
SELECT conrelid::regclass::text AS tbl, conname, pg_get_constraintdef(oid) AS def, convalidated
FROM pg_constraint WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2
"""


async def snapshot(dsn: SecretStr, *, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Schema (columns, indexes, constraints) and every row of every public table."""
    conn = await asyncpg.connect(dsn.get_secret_value(), timeout=10)
    try:
        state: dict[str, Any] = {
            "columns": [tuple(r) for r in await conn.fetch(_COLUMNS)],
            "indexes": [tuple(r) for r in await conn.fetch(_INDEXES)],
            "constraints": [tuple(r) for r in await conn.fetch(_CONSTRAINTS)],
        }
        tables = [
            r[0]
            for r in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
            )
        ]
        for table in tables:
            if table in skip:
                continue
            # Every table here has its key first: row-by-row, in a stable order.
            state[f"rows:{table}"] = [
                tuple(r) for r in await conn.fetch(f'SELECT * FROM "{table}" ORDER BY 1')
            ]
    finally:
        await conn.close()
    return state


async def rows(dsn: SecretStr, table: str) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(dsn.get_secret_value(), timeout=10)
    try:
        return [tuple(r) for r in await conn.fetch(f'SELECT * FROM "{table}" ORDER BY 1')]
    finally:
        await conn.close()


async def execute(dsn: SecretStr, sql: str, *args: Any) -> None:
    conn = await asyncpg.connect(dsn.get_secret_value(), timeout=10)
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


async def at_004_with_data(dsn: SecretStr, directory: Path) -> SqlDirRunner:
    runner = SqlDirRunner(dsn=dsn, directory=directory)
    assert await runner.apply(upto="004") == (
        "001_create_accounts",
        "002_add_users_table",
        "003_add_orders",
        "004_add_users_email_index",
    )
    await seed(dsn)
    return runner
