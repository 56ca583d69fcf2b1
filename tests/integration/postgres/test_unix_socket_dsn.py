"""A Unix-socket DSN (``postgresql:///db?host=/dir``) reaches libpq tools intact.

``urlunsplit`` drops the ``//`` of a URL without an authority for schemes it does not
know, so the socket form came back as ``postgresql:/db?host=...``, which psql rejects.
These run the real psql and pg_dump of the test PostgreSQL over its real socket.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from remediator.connectors.postgres import backup, verify_backup
from remediator.connectors.postgres.dsn import database_of, libpq_target, with_database
from remediator.connectors.postgres.tools import run_tool
from tests.env.postgres import DB_USER
from tests.integration.postgres.test_child_env import real_bindir

pytestmark = pytest.mark.integration


def socket_dsn(postgres: Any, database: str) -> SecretStr:
    sockets = Path(postgres.workdir) / "sock"
    assert any(sockets.glob(".s.PGSQL.*")), f"no PostgreSQL socket in {sockets}"
    # Local connections are trusted by the test server: no password, only the socket.
    return SecretStr(f"postgresql:///{database}?host={sockets}&port={postgres.port}&user={DB_USER}")


async def test_psql_accepts_the_socket_dsn_after_the_rewrite(postgres: Any, db: SecretStr) -> None:
    dsn = socket_dsn(postgres, database_of(db))
    target = libpq_target(dsn)
    assert target.conninfo.startswith("postgresql:///"), target.conninfo
    bindir = await real_bindir(db)
    result = await run_tool(
        [str(bindir / "psql"), "--no-psqlrc", "--tuples-only", "--no-align",
         f"--dbname={target.conninfo}",
         "--command=SELECT current_database() || ' ' || coalesce(inet_server_addr()::text, 'socket')"],
        env=target.env, what="psql over the socket", secret=None, timeout_s=30,
    )  # fmt: skip
    assert result.stdout.strip() == f"{database_of(db)} socket"


async def test_another_database_on_the_same_socket(postgres: Any, db: SecretStr) -> None:
    moved = with_database(socket_dsn(postgres, "postgres"), database_of(db))
    assert moved.get_secret_value().startswith(f"postgresql:///{database_of(db)}?host=")
    target = libpq_target(moved)
    bindir = await real_bindir(db)
    result = await run_tool(
        [str(bindir / "psql"), "--no-psqlrc", "--tuples-only", "--no-align",
         f"--dbname={target.conninfo}", "--command=SELECT current_database()"],
        env=target.env, what="psql over the socket", secret=None, timeout_s=30,
    )  # fmt: skip
    assert result.stdout.strip() == database_of(db)


async def test_backup_over_the_socket(
    postgres: Any, db: SecretStr, backups: Path, clock: Callable[[], datetime]
) -> None:
    taken = await backup(
        dsn=socket_dsn(postgres, database_of(db)),
        directory=backups,
        service="checkout",
        clock=clock,
        bindir=await real_bindir(db),
    )
    assert taken.database == database_of(db)
    await verify_backup(taken, bindir=await real_bindir(db))
