"""revert_with_backup with the SQL-directory runner against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import asyncpg
import pytest
from pydantic import SecretStr

from remediator.connectors.postgres import (
    BackupError,
    IntegrityQuery,
    MigrationFailed,
    RevertBusy,
    ServiceLocks,
    SqlDirRunner,
    list_backups,
    revert_with_backup,
    verify_backup,
)
from remediator.domain.lifecycle import RemediationStatus
from remediator.domain.record import CheckStatus
from tests.integration.postgres.conftest import at_004_with_data, rows, snapshot

pytestmark = pytest.mark.integration

Clock = Callable[[], datetime]
ORPHAN_ORDERS = IntegrityQuery(
    name="orders_have_users",
    sql="SELECT o.id FROM orders o LEFT JOIN users u ON u.id = o.user_id WHERE u.id IS NULL",
)


async def test_fifth_migration_failing_half_way_is_reverted_after_a_backup(
    db: SecretStr, migrations: Path, backups: Path, clock: Clock
) -> None:
    await at_004_with_data(db, migrations)
    at_004 = await snapshot(db)
    # The deploy runs 005 without a transaction; it dies at the unique index.
    deploy = SqlDirRunner(dsn=db, directory=migrations, allow_non_transactional=True)
    with pytest.raises(MigrationFailed, match=r"005_add_users_nickname.up.sql.*unique index"):
        await deploy.apply()
    status = await deploy.status()
    assert status.current == "005_add_users_nickname"
    assert await snapshot(db) != at_004  # half-applied: column, NOT VALID check, bad index

    outcome = await revert_with_backup(
        service="checkout",
        runner=SqlDirRunner(dsn=db, directory=migrations),
        dsn=db,
        backup_dir=backups,
        target=None,
        locks=ServiceLocks(),
        integrity_queries=(ORPHAN_ORDERS,),
        clock=clock,
    )

    assert outcome.status is RemediationStatus.SUCCEEDED, outcome.error
    assert outcome.reverted == ("005_add_users_nickname",)
    assert outcome.target == "004_add_users_email_index"
    assert outcome.after is not None and outcome.after.current == "004_add_users_email_index"
    assert await snapshot(db) == at_004  # schema and every row as at 004
    # The backup was taken first, verified, and recorded.
    assert outcome.backup is not None
    assert list_backups(backups, "checkout") == [outcome.backup]
    await verify_backup(outcome.backup)
    record = outcome.to_record()
    assert record["backup"]["sha256"] == outcome.backup.sha256
    assert record["backup"]["size_bytes"] == outcome.backup.path.stat().st_size > 0
    assert record["backup"]["duration_s"] >= 0
    assert set(record["timings"]) == {"lock_wait", "backup", "revert", "validate", "total"}
    assert outcome.validation is not None and outcome.validation.passed
    assert [c.name for c in outcome.validation.checks] == [
        "migration_state",
        "invalid_indexes",
        "not_valid_constraints",
        "integrity:orders_have_users",
    ]
    assert outcome.validation.as_check_result().status is CheckStatus.PASSED
    json.dumps(record)  # journal-ready


async def test_revert_down_to_a_named_version(
    db: SecretStr, migrations: Path, backups: Path, clock: Clock
) -> None:
    await at_004_with_data(db, migrations)
    users, accounts = await rows(db, "users"), await rows(db, "accounts")

    outcome = await revert_with_backup(
        service="checkout",
        runner=SqlDirRunner(dsn=db, directory=migrations),
        dsn=db,
        backup_dir=backups,
        target="002_add_users_table",
        locks=ServiceLocks(),
        clock=clock,
    )

    assert outcome.status is RemediationStatus.SUCCEEDED, outcome.error
    assert outcome.reverted == ("004_add_users_email_index", "003_add_orders")
    assert outcome.after is not None and outcome.after.applied == (
        "001_create_accounts",
        "002_add_users_table",
    )
    assert outcome.after.pending == (
        "003_add_orders",
        "004_add_users_email_index",
        "005_add_users_nickname",
    )
    state = await snapshot(db)
    assert "rows:orders" not in state
    assert await rows(db, "accounts") == accounts
    assert await rows(db, "users") == [u[:4] for u in users]  # created_at (004) dropped

    # By number alone, down to nothing ("base").
    again = await revert_with_backup(
        service="checkout",
        runner=SqlDirRunner(dsn=db, directory=migrations),
        dsn=db,
        backup_dir=backups,
        target="001",
        locks=ServiceLocks(),
        clock=clock,
    )
    assert again.reverted == ("002_add_users_table",)
    assert len(list_backups(backups, "checkout")) == 2


async def test_failing_down_script_leaves_the_database_unchanged(
    db: SecretStr, migrations: Path, backups: Path, clock: Clock
) -> None:
    down = migrations / "004_add_users_email_index.down.sql"
    down.write_text(down.read_text() + "UPDATE no_such_table SET x = 1;\n")
    await at_004_with_data(db, migrations)
    before = await snapshot(db)

    outcome = await revert_with_backup(
        service="checkout",
        runner=SqlDirRunner(dsn=db, directory=migrations),
        dsn=db,
        backup_dir=backups,
        target="002",
        locks=ServiceLocks(),
        clock=clock,
    )

    assert outcome.status is RemediationStatus.FAILED
    assert outcome.reverted == ()
    assert outcome.error is not None
    assert "004_add_users_email_index.down.sql (line 3)" in outcome.error
    assert 'relation "no_such_table" does not exist' in outcome.error
    assert not outcome.retryable
    assert await snapshot(db) == before  # the column drop and index drop were rolled back
    assert outcome.backup is not None  # taken before the attempt, kept for a human
    assert outcome.validation is not None
    assert outcome.validation.failures[0].name == "migration_state"


async def test_down_script_that_cannot_run_in_a_transaction_is_refused_unless_allowed(
    db: SecretStr, migrations: Path, backups: Path, clock: Clock
) -> None:
    (migrations / "004_add_users_email_index.down.sql").write_text(
        "ALTER TABLE users DROP COLUMN created_at;\nDROP INDEX CONCURRENTLY users_email_idx;\n"
    )
    await at_004_with_data(db, migrations)
    before = await snapshot(db)
    args = {
        "service": "checkout",
        "dsn": db,
        "backup_dir": backups,
        "target": None,
        "locks": ServiceLocks(),
        "clock": clock,
    }

    refused = await revert_with_backup(runner=SqlDirRunner(dsn=db, directory=migrations), **args)
    assert refused.status is RemediationStatus.FAILED
    assert refused.error is not None and "cannot run in a transaction" in refused.error
    assert "CONCURRENTLY" in refused.error
    assert await snapshot(db) == before

    allowed = await revert_with_backup(
        runner=SqlDirRunner(dsn=db, directory=migrations, allow_non_transactional=True),
        **args,
    )
    assert allowed.status is RemediationStatus.SUCCEEDED, allowed.error
    assert allowed.without_transaction == ("004_add_users_email_index",)


async def test_two_reverts_at_once_one_runs_the_other_is_refused(
    db: SecretStr, migrations: Path, backups: Path, clock: Clock
) -> None:
    down = migrations / "004_add_users_email_index.down.sql"
    down.write_text("SELECT pg_sleep(1);\n" + down.read_text())
    await at_004_with_data(db, migrations)
    locks = ServiceLocks()

    async def revert() -> object:
        return await revert_with_backup(
            service="checkout",
            runner=SqlDirRunner(dsn=db, directory=migrations),
            dsn=db,
            backup_dir=backups,
            target=None,
            locks=locks,
            clock=clock,
        )

    results = await asyncio.gather(revert(), revert(), return_exceptions=True)
    busy = [r for r in results if isinstance(r, RevertBusy)]
    done = [r for r in results if not isinstance(r, BaseException)]
    assert len(busy) == 1 and len(done) == 1, results
    assert "checkout: revert to previous since" in str(busy[0])
    assert busy[0].delay > 0
    status = await SqlDirRunner(dsn=db, directory=migrations).status()
    assert status.current == "003_add_orders"  # exactly one step reverted
    assert len(list_backups(backups, "checkout")) == 1


async def test_a_second_revert_waits_for_the_first_when_allowed_to(
    db: SecretStr, migrations: Path, backups: Path, clock: Clock
) -> None:
    down = migrations / "004_add_users_email_index.down.sql"
    down.write_text("SELECT pg_sleep(0.5);\n" + down.read_text())
    await at_004_with_data(db, migrations)
    locks = ServiceLocks()

    async def revert() -> tuple[str, ...]:
        outcome = await revert_with_backup(
            service="checkout",
            runner=SqlDirRunner(dsn=db, directory=migrations),
            dsn=db,
            backup_dir=backups,
            target=None,
            locks=locks,
            lock_wait_s=60,
            clock=clock,
        )
        assert outcome.status is RemediationStatus.SUCCEEDED, outcome.error
        return outcome.reverted

    first, second = await asyncio.gather(revert(), revert())
    assert sorted([first, second]) == [("003_add_orders",), ("004_add_users_email_index",)]


async def test_a_revert_held_by_another_replica_is_refused_with_who_holds_it(
    db: SecretStr, migrations: Path, backups: Path, clock: Clock
) -> None:
    await at_004_with_data(db, migrations)
    other = await asyncpg.connect(
        db.get_secret_value(), server_settings={"application_name": "replica-b"}
    )
    try:
        await other.execute("SELECT pg_advisory_lock(hashtext('remediator:checkout'))")
        with pytest.raises(
            RevertBusy, match=r"another process holds the revert lock: backend pid \d+ \(replica-b"
        ):
            await revert_with_backup(
                service="checkout",
                runner=SqlDirRunner(dsn=db, directory=migrations),
                dsn=db,
                backup_dir=backups,
                target=None,
                locks=ServiceLocks(),  # another process: its own in-process locks
                lock_wait_s=0.5,
                clock=clock,
            )
    finally:
        await other.close()
    assert not backups.exists() or not list_backups(backups, "checkout")
    assert (await SqlDirRunner(dsn=db, directory=migrations).status()).current == (
        "004_add_users_email_index"
    )


async def test_without_a_backup_the_revert_is_refused_unless_a_rule_allows_it(
    db: SecretStr, migrations: Path, backups: Path, clock: Clock, tmp_path: Path
) -> None:
    await at_004_with_data(db, migrations)
    before = await snapshot(db)
    args = {
        "service": "checkout",
        "dsn": db,
        "backup_dir": backups,
        "target": None,
        "locks": ServiceLocks(),
        "clock": clock,
        "bindir": tmp_path / "no-client-binaries",  # pg_dump cannot run
    }
    runner = SqlDirRunner(dsn=db, directory=migrations)
    with pytest.raises(BackupError, match="revert refused: no verified backup"):
        await revert_with_backup(runner=runner, **args)
    assert await snapshot(db) == before

    outcome = await revert_with_backup(runner=runner, allow_without_backup=True, **args)
    assert outcome.status is RemediationStatus.SUCCEEDED, outcome.error
    assert outcome.backup is None
    assert outcome.backup_error is not None and "pg_dump" in outcome.backup_error
    assert outcome.reverted == ("004_add_users_email_index",)


async def test_validation_failure_needs_a_human(
    db: SecretStr, migrations: Path, backups: Path, clock: Clock
) -> None:
    # A down script that forgets the invalid index and the NOT VALID constraint.
    (migrations / "005_add_users_nickname.down.sql").write_text(
        "ALTER TABLE users DROP COLUMN IF EXISTS nickname CASCADE;\n"
    )
    (migrations / "005_add_users_nickname.up.sql").write_text(
        "ALTER TABLE users ADD COLUMN nickname text;\n"
        "ALTER TABLE orders ADD CONSTRAINT orders_note_short CHECK (char_length(note) < 100) NOT VALID;\n"
        "CREATE UNIQUE INDEX CONCURRENTLY accounts_name_lower ON accounts ((lower(name) || 'x'), (1 / (id - 1)));\n"
    )
    await at_004_with_data(db, migrations)
    with pytest.raises(MigrationFailed, match="division by zero"):
        await SqlDirRunner(dsn=db, directory=migrations, allow_non_transactional=True).apply()

    outcome = await revert_with_backup(
        service="checkout",
        runner=SqlDirRunner(dsn=db, directory=migrations),
        dsn=db,
        backup_dir=backups,
        target=None,
        locks=ServiceLocks(),
        integrity_queries=(
            IntegrityQuery(name="two_accounts", sql="SELECT 1 FROM accounts", expect_rows=3),
        ),
        clock=clock,
    )

    assert outcome.status is RemediationStatus.NEEDS_HUMAN
    assert outcome.validation is not None
    failed = {c.name: c.detail for c in outcome.validation.failures}
    assert set(failed) == {"invalid_indexes", "not_valid_constraints", "integrity:two_accounts"}
    assert "accounts_name_lower" in failed["invalid_indexes"]
    assert "orders_note_short" in failed["not_valid_constraints"]
    assert "2 rows, expected 3" in failed["integrity:two_accounts"]
    result = outcome.validation.as_check_result()
    assert result.status is CheckStatus.FAILED and "accounts_name_lower" in result.detail
