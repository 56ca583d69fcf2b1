"""scale_up with and without an HPA; the HPA controller itself does the scaling."""

from __future__ import annotations

import pytest

from remediator.connectors.kubernetes.client import KubeClient, Ref
from remediator.connectors.kubernetes.scale import KubernetesFacts, current_replicas, scale_up
from tests.integration.kube.conftest import deployment, eventually

pytestmark = pytest.mark.integration


async def test_scale_up_without_hpa(kc: KubeClient, ns: str) -> None:
    ref = Ref("Deployment", ns, "web")
    await kc.create(ref, deployment("web", "example/web:1", replicas=1), dry_run=False)
    before = await kc.get(ref)

    dry = await scale_up(
        kc, namespace=ns, deployment="web", target_replicas=3, max_replicas=5, dry_run=True
    )
    assert (dry.via, dry.from_replicas, dry.to_replicas) == ("deployment", 1, 3)
    after_dry = await kc.get(ref)
    assert after_dry["spec"] == before["spec"]
    assert after_dry["metadata"]["generation"] == before["metadata"]["generation"]

    done = await scale_up(
        kc, namespace=ns, deployment="web", target_replicas=10, max_replicas=4, dry_run=False
    )
    assert (done.via, done.from_replicas, done.to_replicas) == ("deployment", 1, 4)
    assert (await kc.get(ref))["spec"]["replicas"] == 4
    assert await current_replicas(kc, namespace=ns, deployment="web") == (4, None)

    # Never scales down.
    none = await scale_up(
        kc, namespace=ns, deployment="web", target_replicas=2, max_replicas=4, dry_run=False
    )
    assert (none.via, none.to_replicas) == ("none", 4)
    assert (await kc.get(ref))["spec"]["replicas"] == 4

    facts = KubernetesFacts(kc, deployments={"shop": "web", "gone": "missing"})
    assert await facts.replicas(service="shop", namespace=ns) == (4, None)
    assert await facts.replicas(service="gone", namespace=ns) is None
    assert await facts.replicas(service="unknown", namespace=ns) is None


async def test_scale_up_raises_hpa_floor_instead(kc: KubeClient, ns: str) -> None:
    ref = Ref("Deployment", ns, "api")
    await kc.create(ref, deployment("api", "example/api:1", replicas=1), dry_run=False)
    hpa_ref = Ref("HorizontalPodAutoscaler", ns, "api")
    await kc.create(
        hpa_ref,
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "api"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"},
                "minReplicas": 1,
                "maxReplicas": 3,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 80},
                        },
                    }
                ],
            },
        },
        dry_run=False,
    )
    facts = KubernetesFacts(kc, deployments={"api": "api"})
    assert await facts.replicas(service="api", namespace=ns) == (1, 3)
    hpa_before = await kc.get(hpa_ref)

    dry = await scale_up(
        kc, namespace=ns, deployment="api", target_replicas=5, max_replicas=4, dry_run=True
    )
    assert (dry.via, dry.hpa, dry.to_min_replicas, dry.to_max_replicas) == ("hpa", "api", 4, 4)
    hpa_after_dry = await kc.get(hpa_ref)
    assert hpa_after_dry["spec"] == hpa_before["spec"]

    done = await scale_up(
        kc, namespace=ns, deployment="api", target_replicas=5, max_replicas=4, dry_run=False
    )
    assert (done.via, done.from_min_replicas, done.to_min_replicas) == ("hpa", 1, 4)
    assert (done.from_max_replicas, done.to_max_replicas) == (3, 4)
    hpa = await kc.get(hpa_ref)
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (4, 4)
    # We never touched spec.replicas; the HPA controller raises it to its new floor
    # (even without metrics, "below minReplicas" is enforced on its next sync).
    await eventually(
        lambda: kc.get(ref),
        lambda d: d["spec"]["replicas"] == 4,
        timeout=45,
        what="HPA scaling api to its new minReplicas",
    )
    assert await facts.replicas(service="api", namespace=ns) == (4, 4)
