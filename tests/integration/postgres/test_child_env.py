"""pg_dump, pg_restore and alembic start with an allow-listed environment.

The daemon's secrets sit in the parent environment; each tool is a recording wrapper
(tests/integration/child_env.py) around the real one, and must still do its job.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import asyncpg
import pytest
from pydantic import SecretStr

from remediator.connectors.postgres import AlembicRunner, backup, restore_table
from remediator.connectors.postgres.dsn import password_of
from remediator.connectors.postgres.tools import find_bindir, server_major
from tests.integration.child_env import (
    assert_no_parent_secret,
    recorded,
    recording_wrapper,
    set_parent_secrets,
)
from tests.integration.postgres.conftest import ALEMBIC_PROJECT, at_004_with_data, rows

pytestmark = pytest.mark.integration

Clock = Callable[[], datetime]


async def real_bindir(dsn: SecretStr) -> Path:
    conn = await asyncpg.connect(dsn.get_secret_value(), timeout=10)
    try:
        version = int(await conn.fetchval("SHOW server_version_num"))
    finally:
        await conn.close()
    return find_bindir(server_major=server_major(version))


def assert_libpq_env(env: dict[str, str], dsn: SecretStr) -> None:
    assert_no_parent_secret(env)
    assert not [n for n in env if n.startswith("PG") and n not in
                ("PGPASSWORD", "PGAPPNAME", "PGCONNECT_TIMEOUT")]  # fmt: skip
    assert env.get("PGPASSWORD", password_of(dsn)) == password_of(dsn)
    assert env["PATH"] == os.environ["PATH"]


async def test_pg_dump_and_pg_restore_start_without_the_daemons_secrets(
    db: SecretStr,
    migrations: Path,
    backups: Path,
    clock: Clock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await at_004_with_data(db, migrations)
    orders = await rows(db, "orders")
    real = await real_bindir(db)
    records = tmp_path / "records"
    for tool in ("pg_dump", "pg_restore", "psql"):
        recording_wrapper(tmp_path / "bin", tool, str(real / tool), records)
    set_parent_secrets(monkeypatch)
    monkeypatch.setenv("PGSERVICE", "stray")  # a stray PG* setting must not reach the tools

    taken = await backup(
        dsn=db, directory=backups, service="checkout", clock=clock, bindir=tmp_path / "bin"
    )
    assert taken.entries > 10
    await restore_table(
        dsn=db, backup=taken, table="orders", bindir=tmp_path / "bin", timeout_s=120
    )
    assert await rows(db, "orders") == orders

    starts = {tool: recorded(records, tool) for tool in ("pg_dump", "pg_restore", "psql")}
    assert len(starts["pg_dump"]) == 1 and len(starts["psql"]) == 1
    assert len(starts["pg_restore"]) >= 2  # --list of the archive, the table's data
    for env in [env for tool_starts in starts.values() for env in tool_starts]:
        assert_libpq_env(env, db)
    # The tools that connect got the password, set for that call (the --list runs did not).
    assert starts["pg_dump"][0]["PGPASSWORD"] == starts["psql"][0]["PGPASSWORD"]


async def test_alembic_starts_with_the_dsn_it_needs_and_nothing_of_the_daemon(
    db: SecretStr, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("alembic", reason="needs alembic installed")
    pytest.importorskip("greenlet", reason="the test project's env.py runs SQLAlchemy asyncpg")
    records = tmp_path / "records"
    python = recording_wrapper(tmp_path / "bin", "python", sys.executable, records)
    set_parent_secrets(monkeypatch)
    runner = AlembicRunner(
        dsn=db, directory=ALEMBIC_PROJECT, command=(str(python), "-m", "alembic"),
        driver="asyncpg",
    )  # fmt: skip
    await runner.upgrade("head")
    assert (await runner.status()).applied == ("0001", "0002", "0003")

    starts = recorded(records, "python")
    assert len(starts) >= 2  # alembic upgrade, alembic history
    for env in starts:
        assert_no_parent_secret(env, set_by_connector=("REMEDIATOR_DATABASE_URL",))
        # The one secret it is given on purpose: the service's own DSN, for its env.py.
        assert env["REMEDIATOR_DATABASE_URL"].startswith("postgresql+asyncpg://")
