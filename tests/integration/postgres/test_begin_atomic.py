"""A revert script with a PostgreSQL 14+ ``BEGIN ATOMIC`` function body.

The hand-written splitter cut the body into statements and took its ``END`` for a
``COMMIT``: the script was marked non-transactional and the revert refused. PostgreSQL's
own parser (pglast) now classifies it; the revert runs, in one transaction, on the
session's real PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
from pydantic import SecretStr

from remediator.connectors.postgres import MigrationFailed, SqlDirRunner
from tests.integration.postgres.conftest import execute

pytestmark = pytest.mark.integration

TOTAL_V1 = """
CREATE OR REPLACE FUNCTION account_total() RETURNS bigint
    LANGUAGE sql
BEGIN ATOMIC
    SELECT count(*) FROM accounts;
END;
"""
TOTAL_V2 = TOTAL_V1.replace("count(*)", "count(*) * 2")  # the bad release
RESTORE_V1 = f"""-- Back to v1 of account_total; the END below closes its body, it is no COMMIT.
{TOTAL_V1}
COMMENT ON FUNCTION account_total() IS 'v1';
"""


def project(root: Path, down_002: str) -> Path:
    root.mkdir()
    (root / "001_accounts.up.sql").write_text(
        "CREATE TABLE accounts (id serial PRIMARY KEY, name text NOT NULL);\n" + TOTAL_V1
    )
    (root / "001_accounts.down.sql").write_text(
        "DROP FUNCTION account_total(); DROP TABLE accounts;"
    )
    (root / "002_double_total.up.sql").write_text(TOTAL_V2)
    (root / "002_double_total.down.sql").write_text(down_002)
    return root


async def fetch(dsn: SecretStr, sql: str) -> object:
    conn = await asyncpg.connect(dsn.get_secret_value(), timeout=10)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def test_revert_with_a_begin_atomic_body(db: SecretStr, tmp_path: Path) -> None:
    runner = SqlDirRunner(dsn=db, directory=project(tmp_path / "m", RESTORE_V1))
    assert await runner.apply() == ("001_accounts", "002_double_total")
    await execute(db, "INSERT INTO accounts (name) VALUES ('acme'), ('globex')")
    assert await fetch(db, "SELECT account_total()") == 4

    # allow_non_transactional is off: a script taken for non-transactional is refused.
    result = await runner.revert_last()

    assert result.reverted == ("002_double_total",)
    assert await fetch(db, "SELECT account_total()") == 2
    assert await fetch(db, "SELECT obj_description('account_total'::regproc)") == "v1"


async def test_the_revert_runs_in_one_transaction(db: SecretStr, tmp_path: Path) -> None:
    failing = RESTORE_V1 + "SELECT 1 / 0;\n"  # fails after the function was replaced
    runner = SqlDirRunner(dsn=db, directory=project(tmp_path / "m", failing))
    await runner.apply()
    await execute(db, "INSERT INTO accounts (name) VALUES ('acme')")

    with pytest.raises(MigrationFailed, match="division by zero"):
        await runner.revert_last()

    # Rolled back as a whole: the bad body and the migration's row are still there.
    assert await fetch(db, "SELECT account_total()") == 2
    assert (await runner.status()).current == "002_double_total"
