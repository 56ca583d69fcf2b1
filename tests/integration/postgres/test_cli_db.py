"""``remediator db status|revert|backups|restore`` against a real PostgreSQL."""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from remediator.cli import db as cli_db
from remediator.connectors.postgres import SqlDirRunner, advisory_lock
from remediator.journal.sqlite import SqliteJournal
from tests.integration.postgres.conftest import execute, rows, snapshot
from tests.integration.postgres.test_steps import AT_004, FAILED, failed_fifth

pytestmark = pytest.mark.integration

RULES = Path(__file__).resolve().parents[3] / "rules"
DSN_ENV = "CHECKOUT_CLI_TEST_DATABASE_URL"


@pytest.fixture
def setup(
    tmp_path: Path, migrations: Path, backups: Path, db: SecretStr, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Path]:
    """Shipped rules with a catalog pointing at the test database; a journal; the DSN env."""
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules)
    catalog = {
        "services": {
            "checkout": {
                "namespace": "shop",
                "workload": "checkout",
                "rollback": {"strategy": "rolling"},
                "database": {
                    "engine": "postgres",
                    "dsn_env": DSN_ENV,
                    "migrations_dir": str(migrations),
                    "backup_dir": str(backups),
                },
            }
        }
    }
    (rules / "catalog.yaml").write_text(yaml.safe_dump(catalog))
    monkeypatch.setenv(DSN_ENV, db.get_secret_value())
    return {"rules": rules, "journal": tmp_path / "journal.db"}


async def cli(setup: dict[str, Path], *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="remediator")
    sub = parser.add_subparsers(dest="command", required=True)
    cli_db.register(sub)
    args = parser.parse_args(
        [*argv, "--rules", str(setup["rules"]), "--journal", f"sqlite:///{setup['journal']}"]
    )
    # The commands run their own event loop, as from a shell.
    return int(await asyncio.to_thread(args.func, args))


def last_json(out: str) -> Any:
    return json.loads(out[out.index("{") :])


async def test_status_revert_backups_restore(
    setup: dict[str, Path],
    db: SecretStr,
    migrations: Path,
    backups: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    at_004 = await failed_fifth(db, migrations)
    half_applied = await snapshot(db)

    assert await cli(setup, "db", "status", "checkout") == 0
    out = capsys.readouterr().out
    assert f"checkout: sqldir runner, at {FAILED}" in out and "latest backup: none" in out

    # Dry run: says what it would do, changes nothing, writes no backup.
    assert await cli(setup, "db", "revert", "checkout", "--dry-run") == 0
    out = capsys.readouterr().out
    assert f"would back up, then revert {FAILED} to end at {AT_004}" in out
    assert await snapshot(db) == half_applied and not backups.exists()

    # The revert: backup, 005 reverted, validated; schema and rows as at 004.
    assert await cli(setup, "db", "revert", "checkout", "--json") == 0
    record = last_json(capsys.readouterr().out)
    assert record["status"] == "succeeded" and record["reverted"] == [FAILED]
    assert record["backup"]["sha256"] and record["validation"]["passed"]
    assert await snapshot(db) == at_004

    # Down to a named version (by number); another backup first.
    assert await cli(setup, "db", "revert", "checkout", "--to", "002", "--json") == 0
    record = last_json(capsys.readouterr().out)
    assert record["reverted"] == [AT_004, "003_add_orders"]
    at_002_backup = record["backup"]["id"]  # taken at 004 with every row
    status = await SqlDirRunner(dsn=db, directory=migrations).status()
    assert status.current == "002_add_users_table"

    assert await cli(setup, "db", "backups", "checkout", "--json") == 0
    listed = last_json(capsys.readouterr().out)["backups"]
    assert len(listed) == 2 and listed[0]["id"] == at_002_backup

    # Whole database from the backup taken at 004: schema and every row come back.
    assert await cli(setup, "db", "restore", "checkout", "--backup", at_002_backup) == 0
    out = capsys.readouterr().out
    assert "restored database" in out and "the state before the restore is backup" in out
    assert await snapshot(db) == at_004

    # One table: damage orders, restore only its rows.
    await execute(db, "DELETE FROM orders WHERE id % 3 = 0; UPDATE orders SET amount_cents = 0")
    assert await rows(db, "orders") != at_004["rows:orders"]
    args = ("db", "restore", "checkout", "--backup", at_002_backup, "--table", "orders")
    assert await cli(setup, *args) == 0
    assert "restored table public.orders" in capsys.readouterr().out
    assert await snapshot(db) == at_004  # row by row, every table

    # Journaled: each manual action is a signal with its outcome and backup.
    journal = SqliteJournal(path=setup["journal"])
    await journal.open()
    try:
        items = (await journal.list_signals(service="checkout", limit=20)).items
    finally:
        await journal.close()
    kinds = sorted(str(i["kind"]) for i in items)
    assert kinds == ["db.restore", "db.restore", "db.revert", "db.revert", "db.revert"]
    assert db.get_secret_value() not in json.dumps(items, default=str)


async def test_revert_is_refused_while_another_process_holds_the_lock(
    setup: dict[str, Path],
    db: SecretStr,
    migrations: Path,
    backups: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await failed_fifth(db, migrations)
    before = await snapshot(db)
    async with advisory_lock(dsn=db, service="checkout", wait_s=0):  # e.g. the daemon
        assert await cli(setup, "db", "revert", "checkout") == cli_db.EXIT_BUSY
    err = capsys.readouterr().err
    assert "nothing changed" in err and "another process holds the revert lock" in err
    assert "backend pid" in err
    assert await snapshot(db) == before and not list(backups.rglob("*.dump"))
    assert db.get_secret_value() not in err


async def test_unknown_backup_and_service_are_usage_errors(
    setup: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli(setup, "db", "restore", "checkout", "--backup", "nope") == 2
    assert "no backup 'nope'" in capsys.readouterr().err
    assert await cli(setup, "db", "status", "nosuch") == 1
    assert "not in the catalog" in capsys.readouterr().err
