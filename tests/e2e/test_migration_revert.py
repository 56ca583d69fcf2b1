"""Issue 7 through the running daemon: a migration.failed event on Kafka makes it back
up the database, revert the failed migration and validate, with the timeline journaled."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from pydantic import SecretStr

from tests.e2e.daemon import RULES, Daemon
from tests.e2e.test_rollback import _remediations
from tests.integration.postgres.conftest import backups, db, migrations, snapshot
from tests.integration.postgres.test_steps import AT_004, FAILED, failed_fifth, native
from tests.integration.testenv.test_kube_smoke import api, eventually, namespace

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
# fixtures shared with the PostgreSQL and kube smoke tests
__all__ = ["api", "backups", "db", "migrations", "namespace"]


@pytest.fixture
def daemon(
    tmp_path: Path,
    kube: Any,
    kafka: Any,
    db: SecretStr,
    migrations: Path,
    backups: Path,
    namespace: str,
) -> Iterator[Daemon]:
    rules = tmp_path / "rules"
    rules.mkdir()
    for name in ("defaults.yaml", "remediation.yaml"):
        shutil.copy(RULES / name, rules / name)
    (rules / "catalog.yaml").write_text(
        f"services:\n  checkout:\n    namespace: {namespace}\n    workload: checkout\n"
        "    rollback: {strategy: rolling}\n"
        f"    database: {{engine: postgres, dsn_env: CHECKOUT_DATABASE_URL, runner: sqldir,"
        f" migrations_dir: {migrations}, backup_dir: {backups}}}\n"
    )
    topic = f"deployments-{uuid.uuid4().hex[:8]}"
    d = Daemon(tmp_path / "daemon", rules=rules, extra_env={
        "CHECKOUT_DATABASE_URL": db.get_secret_value(),
        "REMEDIATOR_KUBERNETES__KUBECONFIG": kube.endpoints["kubeconfig"],
        "REMEDIATOR_KAFKA__BOOTSTRAP_SERVERS": kafka.endpoints["kafka_bootstrap"],
        "REMEDIATOR_KAFKA__DEPLOY_TOPICS": topic,
        "REMEDIATOR_KAFKA__GROUP_ID": f"g-{topic}",
    })  # fmt: skip
    d.topic = topic  # type: ignore[attr-defined]
    d.start()
    yield d
    if d.proc is not None:
        assert d.stop() == 0


async def test_migration_failed_event_backs_up_then_reverts_to_004(
    daemon: Daemon, kafka: Any, db: SecretStr, migrations: Path, backups: Path, namespace: str
) -> None:
    at_004 = await failed_fifth(db, migrations)
    producer = AIOKafkaProducer(bootstrap_servers=kafka.endpoints["kafka_bootstrap"])
    await producer.start()
    try:
        event = native("migration.failed", id=uuid.uuid4().hex, migration=FAILED, version="v2.0.0")
        event["data"]["namespace"] = namespace
        await producer.send_and_wait(daemon.topic, orjson.dumps(event), key=b"checkout")  # type: ignore[attr-defined]
    finally:
        await producer.stop()

    done = await eventually(
        lambda: _remediations(daemon),
        lambda items: any(i["status"] in ("succeeded", "failed", "needs_human") for i in items),
        timeout=120, what="the revert to finish",
    )  # fmt: skip
    [rem] = [i for i in done if i["action"] == "revert_migration"]
    assert rem["status"] == "succeeded", rem
    assert await snapshot(db) == at_004  # schema and every row as they were at 004
    _, detail = daemon.get(f"/api/v1/remediations/{rem['id']}")
    kinds = [(s["kind"], s["status"]) for s in detail["steps"]]
    assert kinds[:2] == [("backup_database", "succeeded"), ("revert_migration", "succeeded")]
    backup = detail["steps"][0]["detail"]["backup"]
    assert backup["sha256"] and backup["size_bytes"] > 0
    assert Path(backup["path"]).is_file() and Path(backup["path"]).is_relative_to(backups)
    assert AT_004 in str(detail["steps"][1]["detail"])
    assert db.get_secret_value() not in daemon.log_path.read_text()
