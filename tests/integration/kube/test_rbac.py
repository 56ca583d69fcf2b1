"""docs/rbac.md's Role is enough for every action: run them all as a ServiceAccount
bound to exactly that Role (dry runs need the same verbs as real writes)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from remediator.connectors.kubernetes import (
    ServiceLease,
    current_replicas,
    endpoints_ready_for,
    pre_canary_replicas,
    restore_configmaps,
    rollout_restart,
    rollout_status,
    rollout_undo,
    scale,
    scale_up,
    set_canary_weight_zero,
    snapshot_configmaps,
    switch_service_selector,
)
from remediator.connectors.kubernetes.client import KubeClient, Ref, connect
from remediator.connectors.kubernetes.errors import KubeError
from tests.integration.kube.conftest import Kubectl, deployment, eventually, patch_as_admin

pytestmark = pytest.mark.integration

RBAC_DOC = Path(__file__).parents[3] / "docs" / "rbac.md"


def documented_role(namespace: str) -> str:
    """The first YAML block of docs/rbac.md, moved into ``namespace``."""
    block = re.search(r"```yaml\n(.*?)```", RBAC_DOC.read_text(), re.DOTALL)
    assert block, "no yaml block in docs/rbac.md"
    text = block.group(1)
    return re.sub(r"namespace: (shop|remediator)\b", f"namespace: {namespace}", text)


@pytest.fixture
async def sa_client(
    kube: Any, kubectl: Kubectl, ns: str, tmp_path: Path
) -> AsyncIterator[KubeClient]:
    manifest = tmp_path / "rbac.yaml"
    manifest.write_text(documented_role(ns))
    kubectl.run("apply", "-f", str(manifest))
    token = kubectl.run("create", "token", "remediator", "-n", ns, "--duration=10m").strip()
    config = yaml.safe_load(Path(kube.endpoints["kubeconfig"]).read_text())
    config["users"] = [{"name": "admin", "user": {"token": token}}]
    path = tmp_path / "sa-kubeconfig"
    path.write_text(yaml.safe_dump(config))
    client = await connect(kubeconfig=path)
    async with client:
        yield client


async def test_documented_role_covers_every_action(
    kc: KubeClient, sa_client: KubeClient, ns: str
) -> None:
    # Set up as admin: a Deployment with two revisions that uses a ConfigMap, a
    # Service, an HTTPRoute with a canary and an HPA'd Deployment.
    await kc.create(
        Ref("ConfigMap", ns, "web-config"),
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "web-config"},
            "data": {"a": "1"},
        },
        dry_run=False,
    )
    web = deployment(
        "web",
        "example/web:1",
        pod_spec={"volumes": [{"name": "c", "configMap": {"name": "web-config"}}]},
    )
    web["metadata"]["annotations"] = {"remediator.io/pre-canary-replicas": "3"}
    web_ref = Ref("Deployment", ns, "web")
    await kc.create(web_ref, web, dry_run=False)
    await kc.create(Ref("Deployment", ns, "api"), deployment("api", "example/api:1"), dry_run=False)
    await kc.create(
        Ref("Service", ns, "web"),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
        },
        dry_run=False,
    )
    await kc.create(
        Ref("HTTPRoute", ns, "web"),
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "web"},
            "spec": {
                "rules": [
                    {
                        "backendRefs": [
                            {"name": "web", "port": 80, "weight": 90},
                            {"name": "web-canary", "port": 80, "weight": 10},
                        ]
                    }
                ]
            },
        },
        dry_run=False,
    )
    await kc.create(
        Ref("HorizontalPodAutoscaler", ns, "api"),
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "api"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"},
                "minReplicas": 1,
                "maxReplicas": 3,
            },
        },
        dry_run=False,
    )
    await patch_as_admin(
        kc,
        web_ref,
        {
            "spec": {
                "template": {"spec": {"containers": [{"name": "app", "image": "example/web:2"}]}}
            }
        },
    )
    await eventually(
        lambda: kc.list_all(Ref("ReplicaSet", ns), label_selector="app=web"),
        lambda items: len(items) == 2,
        what="two revisions of web",
    )

    # Every action, as the ServiceAccount.
    sa, kw = sa_client, {"namespace": ns}
    assert (await rollout_undo(sa, **kw, deployment="web", dry_run=True)).to_revision == 1
    await rollout_restart(sa, **kw, deployment="web", dry_run=True)
    await rollout_status(sa, **kw, deployment="web")
    await switch_service_selector(
        sa, **kw, service="web", selector_key="app", to_value="web-blue", dry_run=True
    )
    await endpoints_ready_for(sa, **kw, service="web", selector={"app": "web"})
    await set_canary_weight_zero(
        sa, **kw, route="web", canary_backend="web-canary", stable_backend="web", dry_run=True
    )
    assert await pre_canary_replicas(sa, **kw, deployment="web") == 3
    await scale(sa, **kw, deployment="web", replicas=5, dry_run=True)
    assert (
        await scale_up(sa, **kw, deployment="web", target_replicas=4, max_replicas=5, dry_run=True)
    ).via == "deployment"
    assert (
        await scale_up(sa, **kw, deployment="api", target_replicas=4, max_replicas=5, dry_run=True)
    ).via == "hpa"
    assert await current_replicas(sa, **kw, deployment="api") == (2, 3)
    await snapshot_configmaps(sa, **kw, deployment="web", revision=2, dry_run=False)
    live = await kc.get(Ref("ConfigMap", ns, "web-config"))
    await kc.replace(
        Ref("ConfigMap", ns, "web-config"),
        {**live, "data": {"a": "2"}},
        resource_version=live["metadata"]["resourceVersion"],
        dry_run=False,
    )
    restored = await restore_configmaps(sa, **kw, deployment="web", revision=2, dry_run=True)
    assert restored.restored == ("web-config",)
    lease = ServiceLease(sa, namespace=ns, service="web", holder="i-1", duration_seconds=15)
    await lease.acquire()
    await lease.renew()
    await lease.release()

    # And nothing beyond it: a delete is forbidden, reported with the object's name.
    fresh = await kc.get(web_ref)
    with pytest.raises(KubeError) as forbidden:
        await sa.delete(
            web_ref, resource_version=fresh["metadata"]["resourceVersion"], dry_run=True
        )
    assert forbidden.value.status == 403
    assert f"Deployment {ns}/web" in str(forbidden.value)
