"""The kube peer is a working control plane: controllers, scheduler and kwok move real objects.

Every wait polls with a deadline and reports the last state it saw.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import pytest
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.api_client import ApiClient

from tests.env import versions
from tests.polling import eventually

pytestmark = pytest.mark.integration

NOT_READY_LABEL = "remediator.test/not-ready"
T = TypeVar("T")


@pytest.fixture
async def api(kube: Any) -> AsyncIterator[ApiClient]:
    configuration = client.Configuration()
    await config.load_kube_config(
        config_file=kube.endpoints["kubeconfig"], client_configuration=configuration
    )
    async with ApiClient(configuration=configuration) as api_client:
        yield api_client


@pytest.fixture
async def namespace(api: ApiClient) -> AsyncIterator[str]:
    core = client.CoreV1Api(api)
    name = f"smoke-{uuid.uuid4().hex[:8]}"
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))

    async def default_sa() -> list[str]:
        sas = await core.list_namespaced_service_account(name)
        return [sa.metadata.name for sa in sas.items]

    # Pods are refused until the ServiceAccount controller has created "default".
    await eventually(default_sa, lambda n: "default" in n, timeout=30, what="default SA")
    yield name
    await core.delete_namespace(name)


def deployment(
    name: str, image: str, *, replicas: int, labels: dict[str, str] | None = None
) -> client.V1Deployment:
    pod_labels = {"app": name, **(labels or {})}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels={"app": name}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=pod_labels),
                spec=client.V1PodSpec(containers=[client.V1Container(name="app", image=image)]),
            ),
        ),
    )


def rollout_state(d: client.V1Deployment) -> dict[str, Any]:
    s = d.status
    return {
        "generation": d.metadata.generation,
        "observed": s.observed_generation,
        "replicas": s.replicas,
        "updated": s.updated_replicas,
        "ready": s.ready_replicas,
        "available": s.available_replicas,
        "revision": (d.metadata.annotations or {}).get("deployment.kubernetes.io/revision"),
    }


def rolled_out(want: int) -> Callable[[dict[str, Any]], bool]:
    def check(s: dict[str, Any]) -> bool:
        return (
            s["observed"] is not None
            and s["observed"] >= s["generation"]
            and s["replicas"] == s["updated"] == s["available"] == s["ready"] == want
        )

    return check


async def test_version_reports_pinned_release(api: ApiClient, kube: Any) -> None:
    info = await client.VersionApi(api).get_code()
    assert info.git_version == versions.KUBERNETES
    assert (info.major, info.minor) == ("1", versions.KUBERNETES.split(".")[1])
    assert kube.endpoints["versions"]["kubernetes"] == versions.KUBERNETES
    assert kube.endpoints["kube_server"].startswith("https://127.0.0.1:")


async def test_nodes_are_kwok_fakes_and_ready(api: ApiClient) -> None:
    nodes = (await client.CoreV1Api(api).list_node()).items
    assert nodes, "kube peer created no nodes"
    for node in nodes:
        assert node.metadata.annotations.get("kwok.x-k8s.io/node") == "fake"
        ready = {c.type: c.status for c in node.status.conditions}.get("Ready")
        assert ready == "True", node.metadata.name


async def test_deployment_rolls_out_and_updates(api: ApiClient, namespace: str) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    await apps.create_namespaced_deployment(
        namespace, deployment("web", "example/web:1", replicas=2)
    )

    async def state() -> dict[str, Any]:
        return rollout_state(await apps.read_namespaced_deployment("web", namespace))

    first = await eventually(state, rolled_out(2), timeout=60, what="rollout of web:1")
    assert first["revision"] == "1"

    # The controller made a ReplicaSet, the scheduler put its pods on kwok nodes,
    # and kwok reported them Running and Ready.
    replicasets = (await apps.list_namespaced_replica_set(namespace)).items
    assert [rs.metadata.owner_references[0].name for rs in replicasets] == ["web"]
    pods = (await core.list_namespaced_pod(namespace, label_selector="app=web")).items
    assert len(pods) == 2
    for pod in pods:
        assert pod.spec.node_name.startswith("kwok-node-")
        assert pod.status.phase == "Running"
        assert {c.type: c.status for c in pod.status.conditions}["Ready"] == "True"

    # A new pod template is a second revision that rolls out the same way: what a
    # rollback target looks like.
    await apps.patch_namespaced_deployment(
        "web",
        namespace,
        {
            "spec": {
                "template": {"spec": {"containers": [{"name": "app", "image": "example/web:2"}]}}
            }
        },
    )
    second = await eventually(state, rolled_out(2), timeout=60, what="rollout of web:2")
    assert second["revision"] == "2"
    assert second["generation"] > first["generation"]
    images = {
        rs.spec.template.spec.containers[0].image: rs.spec.replicas
        for rs in (await apps.list_namespaced_replica_set(namespace)).items
    }
    assert images == {"example/web:1": 0, "example/web:2": 2}


async def test_not_ready_pods_never_become_available(api: ApiClient, namespace: str) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    bad = deployment("bad", "example/bad:1", replicas=2, labels={NOT_READY_LABEL: "true"})
    await apps.create_namespaced_deployment(namespace, bad)

    async def pods() -> list[tuple[str, str | None]]:
        items = (await core.list_namespaced_pod(namespace, label_selector="app=bad")).items
        return [
            (p.status.phase, {c.type: c.status for c in p.status.conditions or []}.get("Ready"))
            for p in items
        ]

    seen = await eventually(
        pods,
        lambda ps: len(ps) == 2 and all(phase == "Running" for phase, _ in ps),
        timeout=60,
        what="bad pods Running",
    )
    assert all(ready == "False" for _, ready in seen), seen

    # Hold for a while: nothing flips them Ready, and the Deployment never counts
    # them available.
    loop = asyncio.get_running_loop()
    until = loop.time() + 5
    while loop.time() < until:
        d = await apps.read_namespaced_deployment("bad", namespace)
        assert not d.status.available_replicas, rollout_state(d)
        assert not d.status.ready_replicas, rollout_state(d)
        assert all(p == ("Running", "False") for p in await pods())
        await asyncio.sleep(0.5)
    assert d.status.unavailable_replicas == 2


async def test_job_completes(api: ApiClient, namespace: str) -> None:
    batch = client.BatchV1Api(api)
    job = client.V1Job(
        metadata=client.V1ObjectMeta(name="migrate"),
        spec=client.V1JobSpec(
            backoff_limit=0,
            template=client.V1PodTemplateSpec(
                spec=client.V1PodSpec(
                    restart_policy="Never",
                    containers=[client.V1Container(name="migrate", image="example/migrate:1")],
                )
            ),
        ),
    )
    await batch.create_namespaced_job(namespace, job)

    async def status() -> dict[str, Any]:
        s = (await batch.read_namespaced_job("migrate", namespace)).status
        return {
            "succeeded": s.succeeded,
            "failed": s.failed,
            "conditions": {c.type: c.status for c in s.conditions or []},
        }

    done = await eventually(
        status, lambda s: s["conditions"].get("Complete") == "True", timeout=60, what="Job done"
    )
    assert done["succeeded"] == 1
    assert not done["failed"]


async def test_gateway_api_httproute_with_weights(api: ApiClient, namespace: str) -> None:
    crd = await client.ApiextensionsV1Api(api).read_custom_resource_definition(
        "httproutes.gateway.networking.k8s.io"
    )
    assert {c.type: c.status for c in crd.status.conditions}["Established"] == "True"
    assert any(v.name == "v1" and v.served for v in crd.spec.versions)

    custom = client.CustomObjectsApi(api)
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "web"},
        "spec": {
            "parentRefs": [{"name": "gw"}],
            "rules": [
                {
                    "backendRefs": [
                        {"name": "web-stable", "port": 80, "weight": 90},
                        {"name": "web-canary", "port": 80, "weight": 10},
                    ]
                }
            ],
        },
    }
    await custom.create_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", namespace, "httproutes", route
    )
    stored = await custom.get_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", namespace, "httproutes", "web"
    )
    weights = [b["weight"] for b in stored["spec"]["rules"][0]["backendRefs"]]
    assert weights == [90, 10]
