"""Issue 7 end to end in-process: a ``migration.failed`` CloudEvent is journaled, the
decision engine plans with the shipped rules, the executor runs the plan with the
PostgreSQL step runner against a real database."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from remediator.connectors.postgres import (
    AlembicRunner,
    ServiceLocks,
    SqlDirRunner,
    list_backups,
    verify_backup,
)
from remediator.connectors.postgres.errors import MigrationFailed, RevertBusy
from remediator.connectors.postgres.steps import PostgresStepRunner
from remediator.domain.errors import PermanentError
from remediator.domain.plans import Step, StepKind
from remediator.domain.rules import RulePack, signal_from_cloudevent
from remediator.domain.rules.model import ServiceSpec
from remediator.domain.steps import (
    BackupDatabaseParams,
    BackupDatabaseStep,
    RevertMigrationParams,
    RevertMigrationStep,
)
from remediator.engine.decider import DecisionEngine
from remediator.engine.executor import Executor
from remediator.journal.sqlite import SqliteJournal
from remediator.rulefiles import load_rule_pack_from_path
from tests.integration.postgres.conftest import (
    ALEMBIC_PROJECT,
    at_004_with_data,
    execute,
    rows,
    snapshot,
)
from tests.unit.journal_helpers import outbox_messages

pytestmark = pytest.mark.integration

RULES = Path(__file__).resolve().parents[3] / "rules"
DSN_ENV = "CHECKOUT_TEST_DATABASE_URL"
FAILED = "005_add_users_nickname"
AT_004 = "004_add_users_email_index"


def backup_step(migration: str = FAILED) -> BackupDatabaseStep:
    """A backup step as decide plans it (the runner reads the database from the catalog)."""
    params = BackupDatabaseParams(
        namespace="shop", engine="postgres", dsn_secret=None, before_migration=migration
    )
    return BackupDatabaseStep(params=params, reason="test")


def revert_step(
    migration: str = FAILED, *, allow_without_backup: bool = False
) -> RevertMigrationStep:
    params = RevertMigrationParams(
        namespace="shop",
        engine="postgres",
        dsn_secret=None,
        migrations_table="schema_migrations",
        migration=migration,
        allow_without_backup=allow_without_backup,
    )
    return RevertMigrationStep(params=params, reason="test")


class NoFacts:
    async def replicas(self, *, service: str, namespace: str) -> tuple[int, int | None] | None:
        return None


async def no_sleep(_: float) -> None:
    return None


class Routed:
    """What the runtime composes: database steps to the PostgreSQL runner, the rest (here
    only the closing NOTIFY, which Kubernetes' runner answers from the outbox) to a stub."""

    def __init__(self, db: PostgresStepRunner) -> None:
        self.db = db
        self.others: list[StepKind] = []

    async def run(
        self, step: Step, *, service: str, dry_run: bool, context: dict[str, Any]
    ) -> dict[str, Any]:
        if step.kind in (StepKind.BACKUP_DATABASE, StepKind.REVERT_MIGRATION):
            return await self.db.run(step, service=service, dry_run=dry_run, context=context)
        self.others.append(step.kind)
        return {"summary": "notices go out through the outbox"}

    def resumable(self, kind: StepKind) -> bool:
        return self.db.resumable(kind) if kind in (StepKind.BACKUP_DATABASE,
                                                   StepKind.REVERT_MIGRATION) else True  # fmt: skip


def native(kind: str, *, id: str, service: str = "checkout", **data: Any) -> dict[str, Any]:
    """A native remediator event (structured-mode CloudEvent), as the deployer sends it."""
    return {
        "specversion": "1.0",
        "id": id,
        "type": f"io.remediator.{kind}",
        "source": "ci/deployer",
        "time": datetime.now(UTC).isoformat(),
        "datacontenttype": "application/json",
        "data": {"service": service, "namespace": "shop", **data},
    }


def pack_for(migrations: Path, backups: Path, **database: Any) -> RulePack:
    """The shipped rules, with a catalog whose only service points at the test database."""
    shipped = load_rule_pack_from_path(RULES)
    checkout = ServiceSpec.model_validate(
        {
            "namespace": "shop",
            "workload": "checkout",
            "rollback": {"strategy": "rolling"},
            "database": {
                "engine": "postgres",
                "dsn_env": DSN_ENV,
                "runner": "sqldir",
                "migrations_dir": str(migrations),
                "backup_dir": str(backups),
                "integrity_queries": [
                    {
                        "name": "orders_have_users",
                        "sql": "SELECT o.id FROM orders o LEFT JOIN users u "
                        "ON u.id = o.user_id WHERE u.id IS NULL",
                    }
                ],
                **database,
            },
        }
    )
    return shipped.model_copy(update={"services": {"checkout": checkout}})


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[SqliteJournal]:
    j = SqliteJournal(path=tmp_path / "journal.db")
    await j.open()
    yield j
    await j.close()


def step_runner(pack: RulePack, db: SecretStr, backups: Path, **kw: Any) -> PostgresStepRunner:
    return PostgresStepRunner(
        pack=pack,
        backup_root=backups,
        locks=kw.pop("locks", ServiceLocks()),
        clock=lambda: datetime.now(UTC),
        environ={DSN_ENV: db.get_secret_value()},
        **kw,
    )


async def failed_fifth(db: SecretStr, migrations: Path) -> dict[str, Any]:
    """Schema at 004 with data, then 005 dies half-way; the snapshot at 004."""
    await at_004_with_data(db, migrations)
    at_004 = await snapshot(db)
    deploy = SqlDirRunner(dsn=db, directory=migrations, allow_non_transactional=True)
    with pytest.raises(MigrationFailed):
        await deploy.apply()
    assert (await deploy.status()).current == FAILED
    assert await snapshot(db) != at_004
    return at_004


async def remediate(journal: SqliteJournal, pack: RulePack, db_runner: PostgresStepRunner) -> str:
    """migration.failed event -> journal -> decision -> executor; the remediation id."""
    event = native("migration.failed", id=uuid.uuid4().hex, migration=FAILED, version="v2.0.0")
    signal = signal_from_cloudevent(event, received_at=datetime.now(UTC))
    [recorded] = await journal.record_signals([signal])
    assert not recorded.duplicate
    engine = DecisionEngine(journal=journal, pack=pack, facts=NoFacts(), dry_run=False)
    assert await engine.run_once() == 1
    [item] = (await journal.list_remediations()).items
    assert (item.rule, item.action, item.status) == (
        "migration-failed-revert",
        "revert_migration",
        "planned",
    )
    runner = Routed(db_runner)
    executor = Executor(
        journal=journal,
        runner=runner,
        instance_id="test",
        sleep=no_sleep,
        notice_channels=("slack",),
    )
    await executor.run_until_idle()
    # No deploy rolled out: no app rollback; only the read-only checks and the notice.
    assert set(runner.others) <= {
        StepKind.NOTIFY, StepKind.VERIFY_CONDITION, StepKind.RECORD_EVIDENCE,
    }  # fmt: skip
    return item.id


async def test_failed_fifth_migration_event_is_backed_up_and_reverted_to_004(
    db: SecretStr, migrations: Path, backups: Path, journal: SqliteJournal
) -> None:
    at_004 = await failed_fifth(db, migrations)
    pack = pack_for(migrations, backups)

    rid = await remediate(journal, pack, step_runner(pack, db, backups))

    item = await journal.get_remediation(rid)
    assert item is not None
    assert item.status == "succeeded", item.reason
    steps = item.steps or ()
    assert [(s.kind, s.status) for s in steps] == [
        ("backup_database", "succeeded"),
        ("revert_migration", "succeeded"),
        # The read-only end of every acting plan: the condition (none to check for a
        # Kafka event: recorded skipped) and the evidence.
        ("verify_condition", "succeeded"),
        ("record_evidence", "succeeded"),
        ("notify", "succeeded"),
    ]
    backup_detail = steps[0].detail["backup"]
    revert = steps[1].detail
    # The backup: taken first, verified, recorded with checksum, size and duration.
    [on_disk] = list_backups(backups, "checkout")
    await verify_backup(on_disk)
    assert backup_detail == on_disk.to_record()
    assert backup_detail["size_bytes"] > 0 and backup_detail["duration_s"] >= 0
    assert len(backup_detail["sha256"]) == 64
    assert revert["backup"] == backup_detail  # the revert used that very backup
    # Reverted to 004, validated, data intact row by row.
    assert revert["reverted"] == [FAILED]
    assert revert["target"] == AT_004 and revert["after"]["current"] == AT_004
    assert revert["validation"]["passed"] is True
    assert [c["name"] for c in revert["validation"]["checks"]] == [
        "migration_state",
        "invalid_indexes",
        "not_valid_constraints",
        "integrity:orders_have_users",
    ]
    assert await snapshot(db) == at_004
    # The DSN is nowhere in the record.
    assert db.get_secret_value() not in str(item)
    notices = [p.message.id for p in await outbox_messages(journal, "slack", limit=10)]
    assert notices[-1] == f"slack:{rid}:succeeded"


async def test_failing_down_script_fails_the_remediation_and_changes_nothing(
    db: SecretStr, migrations: Path, backups: Path, journal: SqliteJournal
) -> None:
    await failed_fifth(db, migrations)
    down = migrations / f"{FAILED}.down.sql"
    down.write_text(down.read_text() + "UPDATE no_such_table SET x = 1;\n")
    before = await snapshot(db)
    pack = pack_for(migrations, backups)

    rid = await remediate(journal, pack, step_runner(pack, db, backups))

    item = await journal.get_remediation(rid)
    assert item is not None
    assert item.status == "failed" and item.reason is not None
    assert f"{FAILED}.down.sql" in item.reason and "no_such_table" in item.reason
    assert [(s.kind, s.status) for s in item.steps or ()] == [
        ("backup_database", "succeeded"),
        ("revert_migration", "failed"),
    ]
    assert await snapshot(db) == before  # the down script's transaction rolled back
    assert len(list_backups(backups, "checkout")) == 1  # the backup is still there
    # The escalation: a "failed" notice queued for Slack.
    notices = [p.message.id for p in await outbox_messages(journal, "slack", limit=10)]
    assert f"slack:{rid}:failed" in notices


async def test_revert_without_a_backup_is_refused(
    db: SecretStr, migrations: Path, backups: Path
) -> None:
    await failed_fifth(db, migrations)
    before = await snapshot(db)
    pack = pack_for(migrations, backups)
    revert = revert_step()
    runner = step_runner(pack, db, backups)
    with pytest.raises(PermanentError, match="revert refused: no verified backup"):
        await runner.run(revert, service="checkout", dry_run=False, context={})
    assert await snapshot(db) == before
    # ...unless the rule allows it (step param from the rule's allow_without_backup).
    allowed = revert_step(allow_without_backup=True)
    detail = await runner.run(allowed, service="checkout", dry_run=False, context={})
    assert detail["reverted"] == [FAILED] and detail["backup"] is None
    assert "no backup_database step" in detail["backup_error"]


async def test_dry_run_changes_nothing_and_writes_no_backup(
    db: SecretStr, migrations: Path, backups: Path
) -> None:
    await failed_fifth(db, migrations)
    before = await snapshot(db)
    pack = pack_for(migrations, backups)
    runner = step_runner(pack, db, backups)
    context: dict[str, Any] = {}
    for step in (backup_step(), revert_step()):
        context[step.kind.value] = await runner.run(
            step, service="checkout", dry_run=True, context=context
        )
    assert context["revert_migration"]["would_revert"] == [FAILED]
    assert context["revert_migration"]["target"] == AT_004
    assert not backups.exists() or not any(backups.rglob("*.dump"))
    assert await snapshot(db) == before
    assert runner.resumable(StepKind.BACKUP_DATABASE)
    assert not runner.resumable(StepKind.REVERT_MIGRATION)


async def test_two_reverts_at_once_one_runs_the_other_is_refused_with_a_reason(
    db: SecretStr, migrations: Path, backups: Path
) -> None:
    await failed_fifth(db, migrations)
    down = migrations / f"{FAILED}.down.sql"
    down.write_text("SELECT pg_sleep(1);\n" + down.read_text())
    pack = pack_for(migrations, backups)
    locks = ServiceLocks()
    # Two runners (two executors, or the daemon and the CLI) sharing nothing but the
    # process lock table; the advisory lock would refuse across processes the same way.
    runners = [step_runner(pack, db, backups, locks=locks) for _ in range(2)]
    backup, revert = backup_step(), revert_step()

    async def plan(runner: PostgresStepRunner) -> dict[str, Any]:
        context = {"step0": await runner.run(backup, service="checkout", dry_run=False,
                                             context={})}  # fmt: skip
        return await runner.run(revert, service="checkout", dry_run=False, context=context)

    # Both have their backup; then both revert at once.
    contexts = [
        {"step0": await r.run(backup, service="checkout", dry_run=False, context={})}
        for r in runners
    ]
    results = await asyncio.gather(
        *(
            r.run(revert, service="checkout", dry_run=False, context=c)
            for r, c in zip(runners, contexts, strict=True)
        ),
        return_exceptions=True,
    )
    done = [r for r in results if isinstance(r, dict)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(done) == 1 and done[0]["reverted"] == [FAILED]
    assert len(refused) == 1 and isinstance(refused[0], RevertBusy)
    assert "checkout: revert since" in str(refused[0]) and "is running" in str(refused[0])
    # Retried later (what the executor does with the TemporaryError), nothing is left.
    again = await plan(runners[1])
    assert again["reverted"] == [] and again["after"]["current"] == AT_004


async def test_a_second_revert_waits_when_lock_wait_is_configured(
    db: SecretStr, migrations: Path, backups: Path
) -> None:
    await failed_fifth(db, migrations)
    down = migrations / f"{FAILED}.down.sql"
    down.write_text("SELECT pg_sleep(0.5);\n" + down.read_text())
    pack = pack_for(migrations, backups, lock_wait="30s")
    runner = step_runner(pack, db, backups)
    context = {"step0": await runner.run(backup_step(), service="checkout", dry_run=False,
                                         context={})}  # fmt: skip
    revert = revert_step()
    first, second = await asyncio.gather(
        runner.run(revert, service="checkout", dry_run=False, context=context),
        runner.run(revert, service="checkout", dry_run=False, context=context),
    )
    # One reverted 005; the other waited, then found it at 004 with nothing to do.
    assert sorted([first["reverted"], second["reverted"]]) == [[], [FAILED]]
    assert first["after"]["current"] == second["after"]["current"] == AT_004


async def test_alembic_runner_through_the_steps(db: SecretStr, backups: Path) -> None:
    pytest.importorskip("greenlet", reason="the test project's env.py runs SQLAlchemy's asyncpg")
    pack = pack_for(
        Path("unused"),
        backups,
        runner="alembic",
        migrations_dir=None,
        alembic_dir=str(ALEMBIC_PROJECT),
        alembic_command=[sys.executable, "-m", "alembic"],
        alembic_driver="asyncpg",
        integrity_queries=[],
    )
    runner = step_runner(pack, db, backups)
    alembic = runner.database("checkout").runner(db)
    assert isinstance(alembic, AlembicRunner)
    await alembic.upgrade("head")
    await execute(
        db, "INSERT INTO users (id, email, nickname) VALUES (1, 'a@x', 'a'), (2, 'b@x', 'b')"
    )
    context: dict[str, Any] = {}
    context["step0"] = await runner.run(
        backup_step("0003"),
        service="checkout",
        dry_run=False,
        context=context,
    )
    revert = revert_step("0003")
    detail = await runner.run(revert, service="checkout", dry_run=False, context=context)
    assert detail["runner"] == "alembic" and detail["reverted"] == ["0003"]
    assert detail["after"]["current"] == "0002" and detail["validation"]["passed"]
    assert await rows(db, "users") == [(1, "a@x"), (2, "b@x")]  # nickname gone, rows kept
