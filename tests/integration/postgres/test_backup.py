"""pg_dump backups, their verification, and restoring a database or one table."""

from __future__ import annotations

import hashlib
import stat
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from remediator.connectors.postgres import (
    BackupError,
    backup,
    list_backups,
    restore_database,
    restore_table,
    verify_backup,
)
from remediator.domain.errors import PermanentError, TemporaryError
from tests.integration.postgres.conftest import at_004_with_data, execute, rows, snapshot

pytestmark = pytest.mark.integration

Clock = Callable[[], datetime]


async def test_backup_is_checksummed_private_and_listed(
    db: SecretStr, migrations: Path, backups: Path, clock: Clock
) -> None:
    await at_004_with_data(db, migrations)
    taken = await backup(dsn=db, directory=backups, service="checkout", clock=clock)

    assert taken.path.parent == backups / "checkout"
    assert taken.path.suffix == ".dump"
    assert taken.sha256 == hashlib.sha256(taken.path.read_bytes()).hexdigest()
    assert taken.size_bytes == taken.path.stat().st_size
    assert taken.server_version.startswith("15.")
    assert taken.entries > 10  # tables, data, sequences, constraints, indexes
    assert stat.S_IMODE(taken.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(taken.path.parent.stat().st_mode) == 0o700
    assert not list(taken.path.parent.glob("*.partial"))
    assert list_backups(backups, "checkout") == [taken]
    assert list_backups(backups, "other") == []
    await verify_backup(taken)

    # One flipped byte: the checksum catches it.
    data = bytearray(taken.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    taken.path.write_bytes(bytes(data))
    with pytest.raises(BackupError, match="sha256"):
        await verify_backup(taken)
    taken.path.write_bytes(b"")
    with pytest.raises(BackupError, match="size 0 bytes"):
        await verify_backup(taken)


async def test_restore_the_whole_database_row_by_row(
    db: SecretStr, migrations: Path, backups: Path, clock: Clock
) -> None:
    await at_004_with_data(db, migrations)
    original = await snapshot(db)
    taken = await backup(dsn=db, directory=backups, service="checkout", clock=clock)
    await execute(
        db,
        """
        DELETE FROM orders WHERE id % 3 = 0;
        UPDATE users SET name = 'changed' WHERE id < 10;
        INSERT INTO accounts (name) VALUES ('initech');
        ALTER TABLE users DROP COLUMN created_at;
        DROP INDEX users_email_idx;
        """,
    )
    assert await snapshot(db) != original

    restored = await restore_database(dsn=db, backup=taken)

    assert restored.kind == "database" and restored.backup_id == taken.id
    assert await snapshot(db) == original


async def test_restore_one_table_row_by_row_leaves_the_others_alone(
    db: SecretStr, migrations: Path, backups: Path, clock: Clock
) -> None:
    await at_004_with_data(db, migrations)
    orders = await rows(db, "orders")
    taken = await backup(dsn=db, directory=backups, service="checkout", clock=clock)
    await execute(
        db,
        """
        DELETE FROM orders WHERE id > 100;
        UPDATE orders SET amount_cents = 0, note = 'wiped' WHERE id % 2 = 0;
        INSERT INTO orders (user_id, amount_cents) VALUES (1, 5);
        UPDATE users SET name = 'kept' WHERE id = 1;
        """,
    )
    users_after = await rows(db, "users")
    schema_after = {k: v for k, v in (await snapshot(db)).items() if not k.startswith("rows:")}

    restored = await restore_table(dsn=db, backup=taken, table="orders")

    assert restored.table == "public.orders"
    assert await rows(db, "orders") == orders
    assert await rows(db, "users") == users_after  # not touched
    assert {
        k: v for k, v in (await snapshot(db)).items() if not k.startswith("rows:")
    } == schema_after  # definition, indexes, constraints kept


async def test_a_table_others_reference_is_refused_and_left_as_is(
    db: SecretStr, migrations: Path, backups: Path, clock: Clock
) -> None:
    await at_004_with_data(db, migrations)
    taken = await backup(dsn=db, directory=backups, service="checkout", clock=clock)
    await execute(db, "UPDATE users SET name = 'changed'")
    before = await snapshot(db)

    with pytest.raises(PermanentError, match="cannot truncate a table referenced in a foreign key"):
        await restore_table(dsn=db, backup=taken, table="users")
    assert await snapshot(db) == before


async def test_a_table_missing_from_the_backup_is_not_truncated(
    db: SecretStr, migrations: Path, backups: Path, clock: Clock
) -> None:
    await at_004_with_data(db, migrations)
    taken = await backup(dsn=db, directory=backups, service="checkout", clock=clock)
    await execute(db, "CREATE TABLE later (id int PRIMARY KEY); INSERT INTO later VALUES (1)")

    with pytest.raises(PermanentError, match=r"has no data for table public\.later"):
        await restore_table(dsn=db, backup=taken, table="later")
    assert await rows(db, "later") == [(1,)]


async def test_an_unreachable_server_is_a_temporary_error(
    db: SecretStr, backups: Path, clock: Clock
) -> None:
    dead = SecretStr("postgresql://remediator:remediator-test-password@127.0.0.1:1/x")
    with pytest.raises(TemporaryError) as caught:
        await backup(dsn=dead, directory=backups, service="checkout", clock=clock)
    assert "remediator-test-password" not in str(caught.value)
    assert not backups.exists() or not any(backups.rglob("*.dump*"))
