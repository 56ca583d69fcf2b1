"""The catalog's ``database`` block and the rule's ``allow_without_backup``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from remediator.domain.plans import Plan
from remediator.domain.rules import ServiceState, check_rule_pack, decide, load_rule_pack
from remediator.domain.steps import RevertMigrationStep

from .conftest import event, shipped_files

RULES = """\
rules:
  - name: revert
    match: {source: kafka, kinds: [migration.failed]}
    action: revert_migration
    allow_without_backup: true
"""


def catalog(database: str) -> str:
    return f"""\
services:
  checkout:
    namespace: shop
    workload: checkout
    rollback: {{strategy: rolling}}
    database:
{database}"""


def problems(database: str) -> list[str]:
    _, found = check_rule_pack({"catalog.yaml": catalog(database), "rules.yaml": RULES})
    return [str(p) for p in found]


def test_shipped_database_blocks_load() -> None:
    pack = load_rule_pack(shipped_files())
    checkout = pack.services["checkout"].database
    assert checkout is not None
    assert (checkout.runner, checkout.dsn_secret) == ("sqldir", "checkout-db")
    assert checkout.migrations_dir == "/srv/migrations/checkout"
    assert [q.name for q in checkout.integrity_queries] == ["orders_have_users"]
    assert checkout.lock_wait == timedelta(0)
    payments = pack.services["payments"].database
    assert payments is not None and payments.job is not None
    assert payments.runner == "job" and payments.job.timeout == timedelta(minutes=15)


def test_old_style_block_still_loads_with_defaults() -> None:
    assert problems("      engine: postgres\n      dsn_secret: checkout-db\n") == []


def test_exactly_one_dsn_source() -> None:
    both = "      engine: postgres\n      dsn_secret: db\n      dsn_env: DATABASE_URL\n"
    [problem] = problems(both)
    assert problem.startswith("catalog.yaml:")
    assert "services.checkout.database" in problem
    assert "exactly one of dsn_secret, dsn_env, dsn_file (got dsn_secret, dsn_env)" in problem
    [problem] = problems("      engine: postgres\n")
    assert "exactly one of dsn_secret, dsn_env, dsn_file" in problem


def test_runner_specific_fields_are_required_and_named() -> None:
    [problem] = problems("      engine: postgres\n      dsn_env: DB\n      runner: alembic\n")
    assert "alembic_dir is required when runner is alembic" in problem
    [problem] = problems("      engine: postgres\n      dsn_env: DB\n      runner: job\n")
    assert "job is required when runner is job" in problem
    [problem] = problems("      engine: postgres\n      dsn_env: DB\n      runner: flyway\n")
    assert "services.checkout.database.runner" in problem
    job_without_command = (
        "      engine: postgres\n      dsn_secret: db\n      runner: job\n"
        "      job: {image: app:v1, command: []}\n"
    )
    [problem] = problems(job_without_command)
    assert "services.checkout.database.job.command" in problem


def test_allow_without_backup_reaches_the_revert_step() -> None:
    pack = load_rule_pack(
        {
            "catalog.yaml": catalog("      engine: postgres\n      dsn_env: DB\n"),
            "rules.yaml": RULES,
        }
    )
    plan = decide(
        event("migration.failed", migration="005_x"),
        pack=pack,
        state=ServiceState.model_validate({"current_replicas": 1}),
        now=datetime(2026, 11, 27, 12, 0, tzinfo=UTC),
    )
    assert isinstance(plan, Plan)
    [revert] = [s for s in plan.steps if isinstance(s, RevertMigrationStep)]
    assert revert.params.allow_without_backup is True
    assert revert.params.migration == "005_x"
