"""The Alembic runner reverts a real Alembic project (alembic_project/, 3 revisions)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from remediator.connectors.postgres import (
    AlembicRunner,
    MigrationFailed,
    ServiceLocks,
    revert_with_backup,
)
from remediator.domain.errors import PermanentError
from remediator.domain.lifecycle import RemediationStatus
from tests.integration.postgres.conftest import ALEMBIC_PROJECT, execute, rows, snapshot

pytest.importorskip("alembic", reason="the Alembic runner's test needs alembic installed")
pytest.importorskip("greenlet", reason="the test project's env.py runs SQLAlchemy's asyncpg driver")

pytestmark = pytest.mark.integration

Clock = Callable[[], datetime]


def make_runner(db: SecretStr, directory: Path = ALEMBIC_PROJECT) -> AlembicRunner:
    # The project's own interpreter in production; this one here.
    return AlembicRunner(
        dsn=db, directory=directory, command=(sys.executable, "-m", "alembic"), driver="asyncpg"
    )


async def test_alembic_project_is_reverted_to_a_revision_then_to_base(
    db: SecretStr, backups: Path, clock: Clock
) -> None:
    runner = make_runner(db)
    assert (await runner.status()).applied == ()
    await runner.upgrade("head")
    status = await runner.status()
    assert status.applied == ("0001", "0002", "0003") and status.pending == ()
    await execute(
        db,
        "INSERT INTO users (id, email, nickname) SELECT g, 'u' || g || '@x', 'n' || g"
        " FROM generate_series(1, 25) g;"
        "INSERT INTO orders (user_id, amount_cents) SELECT 1 + g % 25, g FROM generate_series(1, 50) g",
    )
    users = await rows(db, "users")

    outcome = await revert_with_backup(
        service="billing",
        runner=runner,
        dsn=db,
        backup_dir=backups,
        target="0001",
        locks=ServiceLocks(),
        clock=clock,
    )

    assert outcome.status is RemediationStatus.SUCCEEDED, outcome.error
    assert outcome.runner == "alembic"
    assert outcome.reverted == ("0003", "0002")
    assert outcome.after is not None and outcome.after.current == "0001"
    assert outcome.after.pending == ("0002", "0003")
    assert outcome.backup is not None and outcome.backup.size_bytes > 0
    state = await snapshot(db)
    assert "rows:orders" not in state
    assert await rows(db, "users") == [u[:2] for u in users]  # nickname column gone, rows kept
    assert all("nickname" not in str(ix) for ix in state["indexes"])

    last = await revert_with_backup(
        service="billing",
        runner=runner,
        dsn=db,
        backup_dir=backups,
        target=None,
        locks=ServiceLocks(),
        clock=clock,
    )
    assert last.reverted == ("0001",) and last.target is None
    assert last.after is not None and last.after.applied == ()


async def test_unknown_revision_and_failing_downgrade(db: SecretStr, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    for item in ALEMBIC_PROJECT.rglob("*"):
        if item.is_file() and "__pycache__" not in item.parts:
            target = project / item.relative_to(ALEMBIC_PROJECT)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(item.read_text())
    broken = project / "versions" / "0003_add_users_nickname.py"
    broken.write_text(
        broken.read_text().replace(
            'op.drop_index("users_nickname_idx", table_name="users")',
            'op.drop_index("users_nickname_idx", table_name="users")\n'
            '    op.execute("UPDATE no_such_table SET x = 1")',
        )
    )
    runner = make_runner(db, project)
    await runner.upgrade("head")
    before = await snapshot(db)

    with pytest.raises(PermanentError, match="0009: not an applied revision"):
        await runner.revert_to("0009")
    with pytest.raises(MigrationFailed) as caught:
        await runner.revert_to("0001")
    assert 'relation "no_such_table" does not exist' in str(caught.value)
    assert caught.value.migration == "0003" and caught.value.reverted == ()
    assert "remediator-test-password" not in str(caught.value)
    assert await snapshot(db) == before  # the downgrade ran in one transaction
