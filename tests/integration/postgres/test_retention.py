"""Retention of database backups: real pg_dump archives on disk, a real SQLite journal.

Backups are taken with an injected clock (their ``started_at`` is what retention ages),
then the daemon's retention task prunes with the same injected ``now``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from remediator.connectors.postgres import Backup, backup, list_backups
from remediator.domain.errors import TemporaryError
from remediator.domain.lifecycle import StepStatus
from remediator.domain.retention import RetentionPolicy
from remediator.domain.rules import RulePack, load_rule_pack
from remediator.journal.sqlite import SqliteJournal
from remediator.ports import RemediationPage
from remediator.runtime.retention import RetentionTask
from tests.contract.builders import running
from tests.integration.postgres.test_child_env import real_bindir
from tests.integration.postgres.test_cli_db import cli, last_json, setup  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
AGES_DAYS = (1, 3, 20, 30, 40)  # newest first
POLICY = RetentionPolicy(keep_newest=2, keep_days=7)


def pack_with_backups_in(directory: Path) -> RulePack:
    return load_rule_pack({"catalog.yaml": (
        "services:\n  checkout:\n    namespace: shop\n    workload: checkout\n"
        "    rollback: {strategy: rolling}\n"
        f"    database: {{engine: postgres, dsn_env: UNUSED_DSN, backup_dir: '{directory}'}}\n"
    )})  # fmt: skip


async def backups_aged(db: SecretStr, directory: Path, now: datetime) -> list[Backup]:
    bindir = await real_bindir(db)
    taken = []
    for age in AGES_DAYS:
        at = now - timedelta(days=age)
        taken.append(await backup(dsn=db, directory=directory, service="checkout",
                                  clock=lambda at=at: at, bindir=bindir))  # fmt: skip
    return taken


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[SqliteJournal]:
    j = SqliteJournal(path=tmp_path / "journal.db", clock=lambda: NOW)
    await j.open()
    yield j
    await j.close()


async def in_use_by_a_running_plan(journal: SqliteJournal, kept: Backup) -> None:
    rid = await running(journal, at=NOW)
    await journal.step_started(rid, holder="replica-a", idx=0, kind="backup_database", at=NOW)
    await journal.step_finished(rid, holder="replica-a", idx=0, status=StepStatus.SUCCEEDED,
                                detail={"backup": kept.to_record()}, at=NOW)  # fmt: skip


def task(journal: Any, directory: Path, *, dry_run: bool = False) -> RetentionTask:
    return RetentionTask(
        journal=journal, pack=pack_with_backups_in(directory), backup_root=directory,
        backup_policy=POLICY, snapshot_policy=POLICY, snapshots=None, interval_seconds=3600,
        dry_run=dry_run, clock=lambda: NOW,
    )  # fmt: skip


async def test_the_daemon_prunes_old_backups_but_not_one_in_use(
    db: SecretStr, backups: Path, journal: SqliteJournal
) -> None:
    taken = await backups_aged(db, backups, NOW)
    d1, d3, d20, d30, d40 = taken
    await in_use_by_a_running_plan(journal, d30)
    folder = backups / "checkout"
    crashed = folder / "20261001T000000000000Z-t-aaaaaa.dump.partial"  # a pg_dump that died
    writing = folder / "20261127T115900000000Z-t-bbbbbb.dump.partial"  # one being written
    for path, age in ((crashed, timedelta(days=10)), (writing, timedelta(minutes=1))):
        path.write_bytes(b"partial")
        stamp = (NOW - age).timestamp()
        os.utime(path, (stamp, stamp))

    rehearsal = await task(journal, backups, dry_run=True).once()
    assert [b.id for b in rehearsal.backups[0].pruned] == [d20.id, d40.id]
    assert len(list_backups(backups, "checkout")) == 5 and crashed.exists()

    done = await task(journal, backups).once()

    assert done.errors == []
    assert [b.id for b in done.backups[0].pruned] == [d20.id, d40.id]
    assert [b.id for b in list_backups(backups, "checkout")] == [d1.id, d3.id, d30.id]
    for gone in (d20, d40):
        assert not gone.path.exists() and not gone.path.with_suffix(".json").exists()
    assert not crashed.exists() and writing.exists()


class Unreadable:
    """A journal that cannot answer: which backups are in use is unknown."""

    async def list_remediations(self, **_: Any) -> RemediationPage:
        raise TemporaryError("journal unavailable", delay=1.0)

    async def get_remediation(self, remediation_id: str) -> None:
        raise AssertionError("not reached")


async def test_nothing_is_pruned_when_the_journal_cannot_say_what_is_in_use(
    db: SecretStr, backups: Path
) -> None:
    await backups_aged(db, backups, NOW)
    done = await task(Unreadable(), backups).once()
    assert done.backups == [] and "cannot say which are in use" in done.errors[0]
    assert len(list_backups(backups, "checkout")) == 5


async def test_db_backups_shows_what_retention_keeps_and_prunes(
    setup: dict[str, Path],  # noqa: F811 - the fixture
    db: SecretStr,
    backups: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The command judges at its own "now" (wall clock): the backups are aged from it.
    d1, d3, d20, d30, d40 = await backups_aged(db, backups, datetime.now(UTC))
    journal = SqliteJournal(path=setup["journal"])
    await journal.open()
    try:
        await in_use_by_a_running_plan(journal, d30)
    finally:
        await journal.close()

    assert await cli(setup, "db", "backups", "checkout") == 0
    text = capsys.readouterr().out
    assert "retention keeps the newest 5, those younger than 14 days" in text
    assert await cli(setup, "db", "backups", "checkout", "--json") == 0
    listed = last_json(capsys.readouterr().out)["backups"]
    # The defaults keep 5: all are kept, the three oldest only for being among the newest.
    assert [b["retention"] for b in listed] == ["newest"] * 5
    config = setup["rules"].parent / "config.yaml"
    config.write_text("retention:\n  backups_keep: 2\n  backups_keep_days: 7\n")
    assert await cli(setup, "db", "backups", "checkout", "--json", "--config", str(config)) == 0
    listed = last_json(capsys.readouterr().out)["backups"]
    assert [(b["id"], b["retention"]) for b in listed] == [
        (d1.id, "newest"), (d3.id, "newest"), (d20.id, "prune"), (d30.id, "in_use"),
        (d40.id, "prune"),
    ]  # fmt: skip
