"""The running daemon prunes old database backups (its ``retention`` task, at start).

Real pg_dump archives of the session's PostgreSQL, aged with the backup's injected
clock relative to now; a real ``remediator run`` process with the retention settings
in its environment.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from remediator.connectors.postgres import Backup, backup, list_backups
from tests.e2e.daemon import RULES, Daemon
from tests.integration.postgres.conftest import backups, db
from tests.integration.postgres.test_child_env import real_bindir
from tests.polling import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
__all__ = ["backups", "db"]  # fixtures shared with the PostgreSQL tests


async def test_the_daemon_prunes_old_backups(db: SecretStr, backups: Path, tmp_path: Path) -> None:
    bindir = await real_bindir(db)
    now = datetime.now(UTC)
    taken = []
    for age in (1, 20, 40):
        at = now - timedelta(days=age)
        taken.append(await backup(dsn=db, directory=backups, service="checkout",
                                  clock=lambda at=at: at, bindir=bindir))  # fmt: skip
    newest, old, oldest = taken
    rules = tmp_path / "rules"
    rules.mkdir()
    for name in ("defaults.yaml", "remediation.yaml"):
        shutil.copy(RULES / name, rules / name)
    (rules / "catalog.yaml").write_text(
        "services:\n  checkout:\n    namespace: shop\n    workload: checkout\n"
        "    rollback: {strategy: rolling}\n"
        f"    database: {{engine: postgres, dsn_env: UNUSED_DSN, backup_dir: {backups}}}\n"
    )
    daemon = Daemon(tmp_path / "daemon", rules=rules, extra_env={
        "REMEDIATOR_RETENTION__BACKUPS_KEEP": "1",
        "REMEDIATOR_RETENTION__BACKUPS_KEEP_DAYS": "7",
    })  # fmt: skip
    daemon.start()

    async def remaining() -> list[Backup]:
        return list_backups(backups, "checkout")

    try:
        await eventually(remaining, lambda found: len(found) == 1, timeout=30,
                         what="the old backups pruned")  # fmt: skip
    finally:
        assert daemon.stop() == 0
    assert [b.id for b in list_backups(backups, "checkout")] == [newest.id]
    assert not old.path.exists() and not oldest.path.exists()
    log = daemon.log_path.read_text()
    assert f"retention: pruned 2 backup(s) of checkout ({old.id}, {oldest.id})" in log
