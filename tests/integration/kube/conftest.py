"""Fixtures for the Kubernetes connector tests: a client on the kube peer and a fresh
namespace per test, plus small builders and a poller shared by the test modules."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from remediator.connectors.kubernetes.client import KubeClient, PatchType, Ref, connect
from remediator.connectors.kubernetes.concurrency import apply_with_reread
from tests.polling import eventually

NOT_READY_LABEL = "remediator.test/not-ready"
T = TypeVar("T")


@pytest.fixture
async def kc(kube: Any) -> AsyncIterator[KubeClient]:
    client = await connect(kubeconfig=Path(kube.endpoints["kubeconfig"]))
    async with client:
        yield client


class Kubectl:
    def __init__(self, kube: Any) -> None:
        self.argv = [kube.endpoints["kubectl"], f"--kubeconfig={kube.endpoints['kubeconfig']}"]

    def run(self, *args: str) -> str:
        result = subprocess.run(
            [*self.argv, *args], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, f"kubectl {args}: {result.stdout}\n{result.stderr}"
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-o", "json"))


@pytest.fixture
def kubectl(kube: Any) -> Kubectl:
    return Kubectl(kube)


@pytest.fixture
async def ns(kc: KubeClient, kubectl: Kubectl) -> AsyncIterator[str]:
    name = f"kube-{uuid.uuid4().hex[:8]}"
    kubectl.run("create", "namespace", name)

    async def default_sa() -> bool:
        out = kubectl.run("get", "serviceaccount", "-n", name, "-o", "name")
        return "serviceaccount/default" in out

    # Pods are refused until the ServiceAccount controller has created "default".
    await eventually(default_sa, bool, timeout=30, what="default ServiceAccount")
    yield name
    kubectl.run("delete", "namespace", name, "--wait=false")


def deployment(
    name: str,
    image: str,
    *,
    replicas: int = 2,
    labels: dict[str, str] | None = None,
    progress_deadline: int | None = None,
    pod_spec: dict[str, Any] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        # Fast rollouts: no surge limits worth waiting for with fake pods.
        "strategy": {"rollingUpdate": {"maxSurge": "100%", "maxUnavailable": 0}},
        "template": {
            "metadata": {"labels": {"app": name, **(labels or {})}},
            "spec": {"containers": [{"name": "app", "image": image}], **(pod_spec or {})},
        },
    }
    if progress_deadline is not None:
        spec["progressDeadlineSeconds"] = progress_deadline
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": spec}


def rolled_out(d: dict[str, Any]) -> bool:
    s, want = d.get("status") or {}, d["spec"]["replicas"]
    return (
        s.get("observedGeneration", 0) >= d["metadata"]["generation"]
        and s.get("replicas", 0) == s.get("updatedReplicas", 0) == want
        and s.get("availableReplicas", 0) == want
    )


async def create_and_roll_out(kc: KubeClient, ns: str, body: dict[str, Any]) -> dict[str, Any]:
    ref = Ref("Deployment", ns, body["metadata"]["name"])
    await kc.create(ref, body, dry_run=False)
    return await eventually(lambda: kc.get(ref), rolled_out, what=f"rollout of {ref}")


async def patch_as_admin(
    kc: KubeClient, ref: Ref, patch: Any, *, patch_type: PatchType = PatchType.STRATEGIC
) -> dict[str, Any]:
    """A setup change, made like a human would (controllers' status writes tolerated)."""

    async def attempt(obj: dict[str, Any]) -> dict[str, Any]:
        return await kc.patch(
            ref,
            patch,
            patch_type=patch_type,
            resource_version=obj["metadata"]["resourceVersion"],
            dry_run=False,
        )

    return await apply_with_reread(kc, ref, attempt)
