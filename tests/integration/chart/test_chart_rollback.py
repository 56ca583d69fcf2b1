"""The PodNotReady rollback, end to end, with exactly the chart's ServiceAccount and the
configuration the chart renders; and an action outside the chart's scope is refused.

kwok runs no containers, so the daemon runs as a process: with the config.yaml and rule
files read back from the ConfigMaps the installed release holds, the plain environment
of its Deployment, and a kubeconfig holding a TokenRequest token of its ServiceAccount.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiokafka import AIOKafkaProducer
from kubernetes_asyncio import client
from kubernetes_asyncio.client.api_client import ApiClient

from tests.e2e.daemon import RULES, Daemon
from tests.e2e.test_alertmanager_intake import post
from tests.e2e.test_rollback import (
    REVISION,
    _remediations,
    assert_rolled_back_once,
    bad_release,
    complete,
    template,
)
from tests.integration.chart.conftest import CHART, Cli
from tests.integration.chart.test_cluster import wait_for
from tests.integration.testenv.test_kube_smoke import api, eventually
from tests.unit.payloads import alert, payload

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
__all__ = ["api"]  # an admin client, for what the test sets up and checks
FINISHED = ("succeeded", "failed", "needs_human")


@dataclass(frozen=True)
class Release:
    namespace: str
    shop: str  # listed in rbac.namespaces
    elsewhere: str  # in the catalog, not listed
    daemon: Daemon


def catalog(shop: str, elsewhere: str) -> str:
    # checkout first: the start-up check reads the first service's Deployment.
    return yaml.safe_dump({"services": {
        "checkout": {"namespace": shop, "workload": "checkout", "rollback": {"strategy": "rolling"},
                     "scale": {"min_replicas": 2, "max_replicas": 6, "step": 1}},
        "billing": {"namespace": elsewhere, "workload": "billing",
                    "rollback": {"strategy": "rolling"}},
    }}, sort_keys=False)  # fmt: skip


def values(shop: str, elsewhere: str, kafka: Any, topic: str) -> dict[str, Any]:
    files = {name: (RULES / name).read_text() for name in ("defaults.yaml", "remediation.yaml")}
    return {
        "rbac": {"namespaces": [shop]},
        "journal": {"persistence": {"enabled": False}},
        "rules": {"files": {**files, "catalog.yaml": catalog(shop, elsewhere)}},
        "config": {
            "log": {"format": "json"},
            "kafka": {"bootstrap_servers": kafka.endpoints["kafka_bootstrap"],
                      "deploy_topics": topic, "group_id": f"g-{topic}"},
            "kubernetes": {"rollout_timeout_seconds": 90},
        },
    }  # fmt: skip


def rendered_files(cli: Cli, namespace: str, configmap: str, into: Path) -> Path:
    """The data of an installed ConfigMap, written out as the pod would see it mounted."""
    data = json.loads(cli.kubectl("get", "configmap", configmap, "-n", namespace, "-o", "json"))
    into.mkdir(parents=True)
    for name, text in data["data"].items():
        (into / name).write_text(text)
    return into


def plain_env(cli: Cli, namespace: str) -> dict[str, str]:
    """The Deployment's literal environment (secret files and field refs are the pod's)."""
    d = json.loads(cli.kubectl("get", "deployment", "rem-remediator", "-n", namespace, "-o",
                               "json"))  # fmt: skip
    [c] = d["spec"]["template"]["spec"]["containers"]
    return {
        e["name"]: e["value"]
        for e in c.get("env", [])
        if "value" in e and not e["value"].startswith("/etc/remediator/secrets/")
    }


def service_account_kubeconfig(cli: Cli, namespace: str, path: Path) -> Path:
    """The admin kubeconfig's cluster, with a TokenRequest token of the chart's account."""
    token = cli.kubectl("create", "token", "rem-remediator", "-n", namespace,
                        "--duration=30m").strip()  # fmt: skip
    config = yaml.safe_load(cli.kubeconfig.read_text())
    config["users"] = [{"name": "rem-remediator", "user": {"token": token}}]
    config["contexts"][0]["context"]["user"] = "rem-remediator"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@pytest.fixture
def release(
    cli: Cli, namespaces: Callable[[str], str], kafka: Any, tmp_path: Path
) -> Iterator[Release]:
    namespace, shop, elsewhere = namespaces("rem"), namespaces("shop"), namespaces("billing")
    topic = f"deployments-{uuid.uuid4().hex[:8]}"
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values(shop, elsewhere, kafka, topic)))
    cli.helm("install", "rem", str(CHART), "--namespace", namespace, "-f", str(values_file))
    account = f"system:serviceaccount:{namespace}:rem-remediator"
    # RBAC reaches the authorizer through an informer: wait before the start-up check.
    wait_for(lambda: cli.run([cli.kubectl_bin, "auth", "can-i", "patch", "deployments.apps",
                              "-n", shop, f"--as={account}"]).stdout.strip() == "yes",
             what="the chart's Role in effect", timeout=30)  # fmt: skip

    config = rendered_files(cli, namespace, "rem-remediator-config", tmp_path / "config")
    rules = rendered_files(cli, namespace, "rem-remediator-rules", tmp_path / "rules")
    kubeconfig = service_account_kubeconfig(cli, namespace, tmp_path / "sa-kubeconfig")
    daemon = Daemon(
        tmp_path / "daemon",
        config=config / "config.yaml",
        rules=rules,
        extra_env={
            **plain_env(cli, namespace),
            "REMEDIATOR_KUBERNETES__KUBECONFIG": str(kubeconfig),
            "REMEDIATOR_KUBERNETES__INSTANCE_ID": "rem-remediator-0",
        },
    )
    daemon.topic = topic  # type: ignore[attr-defined]  # what bad_release publishes to
    daemon.start()
    try:
        yield Release(namespace, shop, elsewhere, daemon)
    finally:
        if daemon.proc is not None:
            assert daemon.stop() == 0
        shutil.rmtree(tmp_path / "helm-home", ignore_errors=True)


async def test_the_chart_s_account_rolls_back_a_bad_release(
    api: ApiClient, release: Release, kafka: Any
) -> None:
    daemon = release.daemon
    status, ready = daemon.get("/readyz")
    assert status == 200, ready  # the start-up check passed with the chart's Role
    apps = client.AppsV1Api(api)
    await bad_release(apps, release.shop, daemon, kafka)
    done = await eventually(
        lambda: _remediations(daemon),
        lambda items: any(i["status"] in FINISHED for i in items),
        timeout=120, what="the rollback to finish",
    )  # fmt: skip
    [rem] = [i for i in done if i["action"] == "rollback"]
    assert rem["status"] == "succeeded", rem
    await assert_rolled_back_once(apps, release.shop)


async def publish(kafka: Any, topic: str, events: list[dict[str, Any]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka.endpoints["kafka_bootstrap"])
    await producer.start()
    try:
        for event in events:
            await producer.send_and_wait(topic, orjson.dumps(event), key=b"billing")
    finally:
        await producer.stop()


def deploy_event(namespace: str, revision: int, at: datetime) -> dict[str, Any]:
    return {
        "specversion": "1.0", "id": f"deploy-{namespace}-{revision}", "source": "ci/deployer",
        "type": "io.remediator.deployment.succeeded", "time": at.isoformat(),
        "data": {"service": "billing", "namespace": namespace, "version": f"v{revision}",
                 "revision": str(revision), "previous_revision": str(revision - 1)},
    }  # fmt: skip


async def test_an_action_outside_the_chart_s_namespaces_is_refused_and_changes_nothing(
    api: ApiClient, release: Release, kafka: Any
) -> None:
    daemon, ns = release.daemon, release.elsewhere
    apps = client.AppsV1Api(api)
    body = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="billing"),
        spec=client.V1DeploymentSpec(
            replicas=2,
            selector=client.V1LabelSelector(match_labels={"app": "checkout"}),
            template=template("registry.example/billing:v1", ready=True),
        ),
    )
    await apps.create_namespaced_deployment(ns, body)
    await eventually(lambda: apps.read_namespaced_deployment("billing", ns), complete,
                     timeout=60, what="v1 rollout")  # fmt: skip
    await apps.patch_namespaced_deployment(
        "billing", ns,
        {"spec": {"template": template("registry.example/billing:v2", ready=False).to_dict()}},
    )  # fmt: skip
    v2 = await eventually(
        lambda: apps.read_namespaced_deployment("billing", ns),
        lambda d: d.metadata.annotations.get(REVISION) == "2", timeout=30, what="revision 2",
    )  # fmt: skip
    now = datetime.now(UTC)
    await publish(kafka, daemon.topic, [deploy_event(ns, 1, now - timedelta(hours=2)),  # type: ignore[attr-defined]
                                        deploy_event(ns, 2, now)])  # fmt: skip
    await eventually(
        lambda: _signals(daemon), lambda items: sum(i["source"] == "kafka" for i in items) >= 2,
        timeout=60, what="deploy events journaled",
    )  # fmt: skip
    status, _ = post(daemon, orjson.dumps(payload([alert(
        name="PodNotReady", service="billing", namespace=ns, fingerprint="pnr-out-of-scope",
        starts_at=datetime.now(UTC).isoformat())])))  # fmt: skip
    assert status == 200

    done = await eventually(
        lambda: _remediations(daemon),
        lambda items: any(i["status"] in FINISHED for i in items),
        timeout=120, what="the plan to end",
    )  # fmt: skip
    [rem] = [i for i in done if i["action"] == "rollback"]
    assert rem["status"] in ("failed", "needs_human"), rem
    _, detail = daemon.get(f"/api/v1/remediations/{rem['id']}")
    assert "403" in json.dumps(detail), detail  # the apiserver's refusal is the reason

    after = await apps.read_namespaced_deployment("billing", ns)
    assert after.metadata.generation == v2.metadata.generation
    assert after.spec.template == v2.spec.template
    assert after.metadata.annotations[REVISION] == "2"
    leases = await client.CoordinationV1Api(api).list_namespaced_lease(ns)
    assert not leases.items  # not even a Lease was written there


async def _signals_call(daemon: Daemon) -> Any:
    import asyncio

    return await asyncio.to_thread(daemon.signals)


def _signals(daemon: Daemon) -> Any:
    return _signals_call(daemon)
