"""The Kubernetes Job migration runner on the test cluster (kwok plays the nodes: it
completes Job pods but runs no container, so no command really runs and logs are
whatever the apiserver can get without a kubelet)."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config
from pydantic import SecretStr

from remediator.connectors.kubernetes.jobrunner import (
    JobRunner,
    job_runner_factory,
    secret_source,
)
from remediator.connectors.postgres import MigrationFailed, ServiceLocks
from remediator.connectors.postgres.steps import PostgresStepRunner, table_status
from remediator.domain.rules import RulePack
from remediator.domain.rules.model import ServiceSpec
from remediator.ports import NeedsHuman
from remediator.rulefiles import load_rule_pack_from_path
from tests.integration.kube.conftest import Kubectl, eventually
from tests.integration.postgres.conftest import at_004_with_data, snapshot
from tests.integration.postgres.test_steps import backup_step, revert_step

pytestmark = pytest.mark.integration

RULES = Path(__file__).resolve().parents[3] / "rules"
AT_004 = "004_add_users_email_index"
NOT_READY = {"remediator.test/not-ready": "true"}  # kwok leaves such pods unfinished


@pytest.fixture
def kctl(kube: Any) -> Kubectl:
    return Kubectl(kube)


@pytest.fixture
async def namespace(kctl: Kubectl) -> AsyncIterator[str]:
    name = f"db-{uuid.uuid4().hex[:8]}"
    kctl.run("create", "namespace", name)

    async def default_sa() -> bool:
        return "serviceaccount/default" in kctl.run(
            "get", "serviceaccount", "-n", name, "-o", "name"
        )

    # Pods are refused until the ServiceAccount controller has created "default".
    await eventually(default_sa, bool, timeout=30, what="default ServiceAccount")
    yield name
    kctl.run("delete", "namespace", name, "--wait=false")


@pytest.fixture
async def api(kube: Any) -> AsyncIterator[k8s_client.ApiClient]:
    configuration = k8s_client.Configuration()
    await k8s_config.load_kube_config(
        config_file=kube.endpoints["kubeconfig"],
        client_configuration=configuration,
        persist_config=False,
    )
    client = k8s_client.ApiClient(configuration=configuration)
    yield client
    await client.close()


def runner(api: k8s_client.ApiClient, namespace: str, db: SecretStr, **kw: Any) -> JobRunner:
    async def status() -> Any:
        return await table_status(dsn=db, table="schema_migrations")

    return JobRunner(
        api=api,
        namespace=namespace,
        service="checkout",
        image="registry.example/checkout:v2.0.0",
        command=["bin/migrate", "down", "--to", "{target}"],
        status=status,
        env=[{"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {"name": "db", "key": "dsn"}}}],
        poll_s=0.2,
        **kw,
    )


async def test_job_runs_to_completion_and_is_recorded(
    api: k8s_client.ApiClient, namespace: str, kctl: Kubectl, db: SecretStr, migrations: Path
) -> None:
    await at_004_with_data(db, migrations)
    before = await snapshot(db)
    jobs = runner(api, namespace, db, timeout_s=120)
    assert (await jobs.status()).current == AT_004

    result = await jobs.revert_to("003_add_orders")

    [job] = kctl.json("get", "jobs", "-n", namespace)["items"]
    assert job["metadata"]["name"].startswith("checkout-revert-")
    assert job["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "remediator"
    conditions = {c["type"]: c["status"] for c in job["status"]["conditions"]}
    assert conditions.get("Complete") == "True"
    assert job["spec"]["backoffLimit"] == 0  # a rollback command is never retried blindly
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.example/checkout:v2.0.0"
    assert container["command"] == ["bin/migrate", "down", "--to", "003_add_orders"]
    # The DSN reaches the pod from the service's Secret, never through the Job spec.
    assert {
        "name": "DATABASE_URL",
        "valueFrom": {"secretKeyRef": {"name": "db", "key": "dsn"}},
    } in container["env"]
    assert db.get_secret_value() not in str(job)
    # kwok ran no container: nothing changed, and the runner says so rather than guessing.
    assert result.reverted == () and result.current == AT_004
    assert await snapshot(db) == before
    # Logs: the Job's pod was found; kwok serves no container logs (the apiserver answers
    # 404), which the output says instead of failing the revert.
    assert "checkout-revert-" in result.output
    assert "--- pod " in result.output or "logs unavailable" in result.output


async def test_job_past_its_deadline_fails_the_revert(
    api: k8s_client.ApiClient, namespace: str, kctl: Kubectl, db: SecretStr, migrations: Path
) -> None:
    await at_004_with_data(db, migrations)
    jobs = runner(api, namespace, db, timeout_s=2, pod_labels=NOT_READY)  # the pod never finishes
    # Permanent: whether the command changed anything is unknown, so no blind retry.
    with pytest.raises(MigrationFailed, match=r"Job .* failed: DeadlineExceeded"):
        await jobs.revert_last()
    [job] = kctl.json("get", "jobs", "-n", namespace)["items"]  # kept for people to inspect
    conditions = {c["type"]: c.get("reason") for c in job["status"]["conditions"]}
    assert conditions.get("Failed") == "DeadlineExceeded"

    async def pods_left() -> list[Any]:
        items = kctl.json("get", "pods", "-n", namespace)["items"]
        return [p for p in items if p["status"].get("phase") in ("Pending", "Running")]

    await eventually(pods_left, lambda items: not items, timeout=30, what="the pod stopped")


async def test_step_runner_with_the_job_runner_and_a_secret_dsn(
    api: k8s_client.ApiClient,
    namespace: str,
    kctl: Kubectl,
    db: SecretStr,
    migrations: Path,
    backups: Path,
) -> None:
    """The daemon's path: DSN from a Kubernetes Secret, backup, revert by Job, validation.

    kwok completes the Job without running it, so the schema stays at 004 and the
    validation must catch that: the remediation needs a human, it is not "succeeded".
    """
    await at_004_with_data(db, migrations)
    encoded = base64.b64encode(db.get_secret_value().encode()).decode()
    kctl.run(
        "create", "secret", "generic", "checkout-db", "-n", namespace,
        f"--from-literal=dsn={db.get_secret_value()}",
    )  # fmt: skip
    assert encoded  # the Secret holds the DSN base64-encoded, as the API returns it
    read = secret_source(api)
    assert await read(f"{namespace}/checkout-db") == db.get_secret_value()

    shipped = load_rule_pack_from_path(RULES)
    spec = ServiceSpec.model_validate(
        {
            "namespace": namespace,
            "workload": "checkout",
            "rollback": {"strategy": "rolling"},
            "database": {
                "engine": "postgres",
                "dsn_secret": "checkout-db",
                "runner": "job",
                "backup_dir": str(backups),
                "job": {
                    "image": "registry.example/checkout:v2.0.0",
                    "command": ["bin/migrate", "down", "--to", "{target}"],
                    "timeout": "2m",
                },
            },
        }
    )
    pack: RulePack = shipped.model_copy(update={"services": {"checkout": spec}})
    steps = PostgresStepRunner(
        pack=pack,
        backup_root=backups,
        locks=ServiceLocks(),
        clock=lambda: datetime.now(UTC),
        secret_source=read,
        job_runners=job_runner_factory(api),
    )
    context: dict[str, Any] = {}
    context["step0"] = await steps.run(
        backup_step(AT_004),
        service="checkout",
        dry_run=False,
        context=context,
    )
    assert context["step0"]["backup"]["size_bytes"] > 0
    revert = revert_step(AT_004)
    with pytest.raises(NeedsHuman, match=r"validation failed: migration_state"):
        await steps.run(revert, service="checkout", dry_run=False, context=context)
    [job] = kctl.json("get", "jobs", "-n", namespace)["items"]
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["command"][-1] == "003_add_orders"
    assert {"name": "DATABASE_URL",
            "valueFrom": {"secretKeyRef": {"name": "checkout-db", "key": "dsn"}}} in container["env"]  # fmt: skip
