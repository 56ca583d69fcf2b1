"""A bad config release is undone: snapshots taken on each deploy event, the previous
one applied back, and the rollout restarted so pods read it."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.api_client import ApiClient

from tests.e2e.daemon import RULES, Daemon
from tests.e2e.test_alertmanager_intake import post
from tests.e2e.test_rollback import _remediations, api, complete, deployed, namespace, rollout
from tests.integration.testenv.test_kube_smoke import eventually
from tests.unit.payloads import alert, payload

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
__all__ = ["api", "namespace"]  # fixtures shared with test_rollback
REVISION = "deployment.kubernetes.io/revision"


@pytest.fixture
def daemon(tmp_path: Path, kube: Any, kafka: Any, namespace: str) -> Iterator[Daemon]:
    rules = tmp_path / "rules"
    rules.mkdir()
    shutil.copy(RULES / "defaults.yaml", rules / "defaults.yaml")
    (rules / "catalog.yaml").write_text(
        f"services:\n  checkout:\n    namespace: {namespace}\n    workload: checkout\n"
        "    rollback: {strategy: rolling}\n    config: {configmaps: [checkout-config]}\n"
    )
    # Teams decide which alerts mean "the config is bad"; this one does.
    (rules / "config.yaml").write_text(
        "rules:\n  - name: bad-config-restore\n"
        "    match: {source: alertmanager, kinds: [ConfigBroken]}\n"
        "    action: restore_config\n"
    )
    topic = f"deployments-{uuid.uuid4().hex[:8]}"
    d = Daemon(tmp_path / "daemon", rules=rules, extra_env={
        "REMEDIATOR_KUBERNETES__KUBECONFIG": kube.endpoints["kubeconfig"],
        "REMEDIATOR_KUBERNETES__ROLLOUT_TIMEOUT_SECONDS": "90",
        "REMEDIATOR_KAFKA__BOOTSTRAP_SERVERS": kafka.endpoints["kafka_bootstrap"],
        "REMEDIATOR_KAFKA__DEPLOY_TOPICS": topic,
        "REMEDIATOR_KAFKA__GROUP_ID": f"g-{topic}",
    })  # fmt: skip
    d.topic = topic  # type: ignore[attr-defined]
    d.start()
    yield d
    if d.proc is not None:
        assert d.stop() == 0


async def test_config_of_the_previous_deploy_is_restored_and_pods_restart(
    api: ApiClient, namespace: str, daemon: Daemon, kafka: Any
) -> None:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    await core.create_namespaced_config_map(namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="checkout-config"), data={"MODE": "good"}))  # fmt: skip
    container = client.V1Container(
        name="app", image="registry.example/checkout:v1",
        env_from=[client.V1EnvFromSource(config_map_ref=client.V1ConfigMapEnvSource(name="checkout-config"))],
    )  # fmt: skip
    await apps.create_namespaced_deployment(namespace, client.V1Deployment(
        metadata=client.V1ObjectMeta(name="checkout"),
        spec=client.V1DeploymentSpec(
            replicas=2, selector=client.V1LabelSelector(match_labels={"app": "checkout"}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": "checkout"}),
                spec=client.V1PodSpec(containers=[container]))),
    ))  # fmt: skip
    await eventually(lambda: rollout(apps, namespace), complete, timeout=60, what="v1 rollout")
    await deployed(kafka, daemon.topic, 1, "v1", namespace, datetime.now(UTC) - timedelta(hours=1))  # type: ignore[attr-defined]

    async def snapshot(rev: int) -> Any:
        found = await core.list_namespaced_config_map(namespace)
        prefix = f"checkout-config-rev-{rev}-"  # then the hash of the data
        return [cm for cm in found.items if cm.metadata.name.startswith(prefix)]

    [kept] = await eventually(lambda: snapshot(1), bool, timeout=60, what="snapshot of revision 1")
    assert kept.data == {"MODE": "good"} and kept.immutable

    # The bad release: new config and a new revision that reads it.
    await core.patch_namespaced_config_map("checkout-config", namespace, {"data": {"MODE": "bad"}})
    await apps.patch_namespaced_deployment("checkout", namespace, {"spec": {"template": {
        "metadata": {"annotations": {"release": "v2"}}}}})  # fmt: skip
    await eventually(lambda: rollout(apps, namespace),
                     lambda d: d.metadata.annotations.get(REVISION) == "2" and complete(d),
                     timeout=60, what="revision 2")  # fmt: skip
    await deployed(kafka, daemon.topic, 2, "v2", namespace, datetime.now(UTC))  # type: ignore[attr-defined]
    await eventually(lambda: snapshot(2), bool, timeout=60, what="snapshot of revision 2")

    status, _ = post(daemon, orjson.dumps(payload([alert(
        name="ConfigBroken", service="checkout", namespace=namespace, fingerprint="cfg")])))  # fmt: skip
    assert status == 200
    done = await eventually(
        lambda: _remediations(daemon),
        lambda items: any(i["status"] in ("succeeded", "failed", "needs_human") for i in items),
        timeout=120, what="the restore to finish",
    )  # fmt: skip
    [rem] = [i for i in done if i["action"] == "restore_config"]
    assert rem["status"] == "succeeded", rem

    live = await core.read_namespaced_config_map("checkout-config", namespace)
    assert live.data == {"MODE": "good"}
    final = await eventually(lambda: rollout(apps, namespace), complete, timeout=60, what="restart")
    annotations = final.spec.template.metadata.annotations
    assert "kubectl.kubernetes.io/restartedAt" in annotations
    assert annotations.get("remediator.io/config-revision") == "1"
    _, detail = daemon.get(f"/api/v1/remediations/{rem['id']}")
    steps = {s["kind"]: s for s in detail["steps"]}
    assert steps["restore_config"]["detail"]["revision"] == 1
