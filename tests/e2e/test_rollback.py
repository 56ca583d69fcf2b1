"""Issue 6 acceptance: a bad release is rolled back by the daemon on a real control plane.

v1 rolls out healthy; v2's pods never become Ready (kwok keeps pods with the
not-ready label NotReady); the CD pipeline reports both deploys on Kafka; a
PodNotReady alert reaches the webhook; the daemon rolls back to revision 1 with
kubectl's semantics, waits for the rollout and records the timeline.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from kubernetes_asyncio import client
from kubernetes_asyncio.client.api_client import ApiClient

from tests.e2e.daemon import RULES, Daemon
from tests.e2e.test_alertmanager_intake import post
from tests.integration.testenv.test_kube_smoke import (  # fixtures: api, namespace
    NOT_READY_LABEL,
    api,
    eventually,
    namespace,
)
from tests.unit.payloads import alert, payload

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
__all__ = ["api", "namespace"]  # fixtures shared with the kube smoke tests
REVISION = "deployment.kubernetes.io/revision"


@pytest.fixture
def rules(tmp_path: Path, namespace: str) -> Path:
    """The shipped rules, with a catalog whose checkout lives in this test's namespace."""
    directory = tmp_path / "rules"
    directory.mkdir()
    for name in ("defaults.yaml", "remediation.yaml"):
        shutil.copy(RULES / name, directory / name)
    (directory / "catalog.yaml").write_text(
        f"services:\n  checkout:\n    namespace: {namespace}\n    workload: checkout\n"
        "    rollback: {strategy: rolling}\n    scale: {min_replicas: 2, max_replicas: 6, step: 1}\n"
    )
    return directory


@pytest.fixture(params=[False], ids=["acting"])
def daemon(
    request: pytest.FixtureRequest, tmp_path: Path, kube: Any, kafka: Any, rules: Path
) -> Iterator[Daemon]:
    topic = f"deployments-{uuid.uuid4().hex[:8]}"
    d = Daemon(
        tmp_path / "daemon",
        rules=rules,
        extra_env={
            "REMEDIATOR_KUBERNETES__KUBECONFIG": kube.endpoints["kubeconfig"],
            "REMEDIATOR_KUBERNETES__INSTANCE_ID": "e2e-daemon",
            "REMEDIATOR_KUBERNETES__ROLLOUT_TIMEOUT_SECONDS": "90",
            "REMEDIATOR_KAFKA__BOOTSTRAP_SERVERS": kafka.endpoints["kafka_bootstrap"],
            "REMEDIATOR_KAFKA__DEPLOY_TOPICS": topic,
            "REMEDIATOR_KAFKA__GROUP_ID": f"g-{topic}",
            "REMEDIATOR_DRY_RUN": "true" if request.param else "false",
        },
    )
    d.topic = topic  # type: ignore[attr-defined]
    d.start()
    yield d
    if d.proc is not None:
        assert d.stop() == 0


def template(image: str, *, ready: bool) -> client.V1PodTemplateSpec:
    labels = {"app": "checkout"} | ({} if ready else {NOT_READY_LABEL: "true"})
    return client.V1PodTemplateSpec(
        metadata=client.V1ObjectMeta(labels=labels),
        spec=client.V1PodSpec(containers=[client.V1Container(name="app", image=image)]),
    )


async def rollout(apps: client.AppsV1Api, namespace: str) -> Any:
    return await apps.read_namespaced_deployment("checkout", namespace)


def complete(d: Any) -> bool:
    s = d.status
    return (
        (s.observed_generation or 0) >= d.metadata.generation
        and (s.updated_replicas or 0) == d.spec.replicas
        and (s.available_replicas or 0) == d.spec.replicas
        and (s.replicas or 0) == d.spec.replicas
    )


async def deployed(kafka: Any, topic: str, revision: int, version: str, namespace: str,
                   at: datetime) -> None:  # fmt: skip
    producer = AIOKafkaProducer(bootstrap_servers=kafka.endpoints["kafka_bootstrap"])
    await producer.start()
    try:
        event = {
            "specversion": "1.0", "id": f"deploy-{namespace}-{revision}", "source": "ci/deployer",
            "type": "io.remediator.deployment.succeeded", "time": at.isoformat(),
            "data": {"service": "checkout", "namespace": namespace, "version": version,
                     "revision": str(revision), "previous_revision": str(revision - 1)},
        }  # fmt: skip
        await producer.send_and_wait(topic, orjson.dumps(event), key=b"checkout")
    finally:
        await producer.stop()


async def bad_release(apps: client.AppsV1Api, namespace: str, daemon: Daemon, kafka: Any) -> Any:
    """v1 healthy, v2 never Ready, both reported by CD, then a PodNotReady alert.

    Returns the Deployment as v2 left it.
    """
    body = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="checkout"),
        spec=client.V1DeploymentSpec(
            replicas=2,
            selector=client.V1LabelSelector(match_labels={"app": "checkout"}),
            template=template("registry.example/checkout:v1", ready=True),
        ),
    )
    await apps.create_namespaced_deployment(namespace, body)
    await eventually(lambda: rollout(apps, namespace), complete, timeout=60, what="v1 rollout")
    now = datetime.now(UTC)
    await deployed(kafka, daemon.topic, 1, "v1", namespace, now - timedelta(hours=2))  # type: ignore[attr-defined]

    # v2: its pods stay NotReady, so the rollout never completes.
    await apps.patch_namespaced_deployment(
        "checkout", namespace,
        {"spec": {"template": template("registry.example/checkout:v2", ready=False).to_dict()}},
    )  # fmt: skip
    await deployed(kafka, daemon.topic, 2, "v2", namespace, datetime.now(UTC))  # type: ignore[attr-defined]
    v2 = await eventually(
        lambda: rollout(apps, namespace),
        lambda d: d.metadata.annotations.get(REVISION) == "2",
        timeout=30, what="revision 2",
    )  # fmt: skip
    assert not complete(v2)
    # Both deploy events must be journaled before the alert is decided.
    await eventually(
        lambda: _signals(daemon), lambda items: sum(i["source"] == "kafka" for i in items) >= 2,
        timeout=60, what="deploy events journaled",
    )  # fmt: skip
    status, _ = post(daemon, orjson.dumps(payload([alert(
        name="PodNotReady", service="checkout", namespace=namespace, fingerprint="pnr-e2e",
        starts_at=datetime.now(UTC).isoformat())])))  # fmt: skip
    assert status == 200
    return v2


async def replica_set_specs(apps: client.AppsV1Api, namespace: str) -> dict[str, Any]:
    return {
        rs.metadata.name: (rs.metadata.generation, rs.metadata.annotations, rs.spec.replicas)
        for rs in (await apps.list_namespaced_replica_set(namespace)).items
    }


async def assert_rolled_back_once(apps: client.AppsV1Api, namespace: str) -> None:
    final = await rollout(apps, namespace)
    assert complete(final)
    assert final.spec.template.spec.containers[0].image == "registry.example/checkout:v1"
    assert NOT_READY_LABEL not in final.spec.template.metadata.labels
    # As kubectl leaves it: the v1 ReplicaSet is renumbered to the next revision (3),
    # v2's keeps 2, and revision 1 is gone from the history. A second undo would have
    # made it 4.
    replica_sets = await apps.list_namespaced_replica_set(namespace)
    by_image = {rs.spec.template.spec.containers[0].image: rs for rs in replica_sets.items}
    assert by_image["registry.example/checkout:v1"].metadata.annotations[REVISION] == "3"
    assert by_image["registry.example/checkout:v2"].metadata.annotations[REVISION] == "2"
    assert final.metadata.annotations[REVISION] == "3"
    assert "pod-template-hash" not in final.spec.template.metadata.labels


async def test_bad_release_is_rolled_back_like_kubectl_rollout_undo(
    api: ApiClient, namespace: str, daemon: Daemon, kafka: Any
) -> None:
    apps = client.AppsV1Api(api)
    await bad_release(apps, namespace, daemon, kafka)
    done = await eventually(
        lambda: _remediations(daemon),
        lambda items: any(i["status"] in ("succeeded", "failed", "needs_human") for i in items),
        timeout=120, what="the rollback to finish",
    )  # fmt: skip
    [rem] = [i for i in done if i["action"] == "rollback"]
    assert rem["status"] == "succeeded", rem
    await assert_rolled_back_once(apps, namespace)
    assert (
        daemon.metric(
            'remediator_remediations_finished_total{action="rollback",status="succeeded"}'
        )
        == 1
    )
    assert daemon.metric('remediator_decisions_total{outcome="plan",reason=""}') == 1
    # Each hop was timed once: the two deploy events and the alert into the journal and
    # decided; the plan's first step, and its run.
    assert daemon.metric("remediator_journal_latency_seconds_count") == 3
    assert daemon.metric("remediator_decision_latency_seconds_count") == 3
    assert daemon.metric("remediator_action_latency_seconds_count") == 1
    duration = 'remediator_remediation_duration_seconds_count{status="succeeded"}'
    assert daemon.metric(duration) == 1
    deploys = 'remediator_kafka_events_consumed_total{type="io.remediator.deployment.succeeded"}'
    assert daemon.metric(deploys) == 2

    status, detail = daemon.get(f"/api/v1/remediations/{rem['id']}")
    assert status == 200
    kinds = [(s["kind"], s["status"]) for s in detail["steps"]]
    assert kinds[:2] == [("rollout_undo", "succeeded"), ("wait_rollout", "succeeded")]
    assert detail["steps"][0]["detail"]["to_revision"] == 1
    history = subprocess.run(
        [sys.executable, "-m", "remediator", "history", rem["id"],
         "--journal", f"sqlite:///{daemon.journal}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "rollout_undo" in history.stdout and "finished: succeeded" in history.stdout


@pytest.mark.parametrize("daemon", [True], ids=["dry-run"], indirect=True)
async def test_dry_run_rehearses_the_rollback_and_changes_nothing(
    api: ApiClient, namespace: str, daemon: Daemon, kafka: Any
) -> None:
    apps = client.AppsV1Api(api)
    v2 = await bad_release(apps, namespace, daemon, kafka)
    # Controllers keep writing status (and so resourceVersion) while v2's pods come up;
    # what a rollback would change is the spec (generation), the template, annotations
    # and the ReplicaSets' revision numbers and sizes.
    rs_before = await replica_set_specs(apps, namespace)
    done = await eventually(
        lambda: _remediations(daemon),
        lambda items: any(i["status"] == "dry-run" and i["finished_at"] for i in items),
        timeout=120, what="the dry run to finish",
    )  # fmt: skip
    [rem] = [i for i in done if i["action"] == "rollback"]
    status, detail = daemon.get(f"/api/v1/remediations/{rem['id']}")
    assert status == 200
    undo = detail["steps"][0]
    assert (undo["kind"], undo["status"], undo["detail"]["dry_run"]) == (
        "rollout_undo",
        "succeeded",
        True,
    )
    assert undo["detail"]["to_revision"] == 1
    after = await rollout(apps, namespace)
    assert after.metadata.generation == v2.metadata.generation
    assert after.spec.template == v2.spec.template
    assert after.metadata.annotations == v2.metadata.annotations
    assert after.metadata.annotations[REVISION] == "2"
    rs_after = await replica_set_specs(apps, namespace)
    assert rs_after == rs_before


async def test_sigkill_mid_plan_then_restart_mutates_once(
    api: ApiClient, namespace: str, daemon: Daemon, kafka: Any
) -> None:
    apps = client.AppsV1Api(api)
    await bad_release(apps, namespace, daemon, kafka)

    def undo_done(items: list[dict[str, Any]]) -> bool:
        for item in items:
            if item["action"] == "rollback":
                _, detail = daemon.get(f"/api/v1/remediations/{item['id']}")
                steps = detail.get("steps", [])
                return bool(steps) and steps[0]["status"] == "succeeded"
        return False

    await eventually(lambda: _remediations(daemon), undo_done, timeout=120, what="the undo")
    assert daemon.proc is not None
    daemon.proc.kill()  # SIGKILL: no drain, the plan is cut wherever it is
    daemon.proc.wait(timeout=30)
    daemon.proc = None
    daemon.start()
    done = await eventually(
        lambda: _remediations(daemon),
        lambda items: any(i["status"] in ("succeeded", "failed", "needs_human") for i in items),
        timeout=120, what="the plan to end after restart",
    )  # fmt: skip
    [rem] = [i for i in done if i["action"] == "rollback"]
    assert rem["status"] in ("succeeded", "failed", "needs_human")
    _, detail = daemon.get(f"/api/v1/remediations/{rem['id']}")
    assert [s["kind"] for s in detail["steps"]].count("rollout_undo") == 1
    await assert_rolled_back_once(apps, namespace)


def _signals(daemon: Daemon) -> Any:
    return _async(daemon.signals)


def _remediations(daemon: Daemon) -> Any:
    return _async(lambda: daemon.get("/api/v1/remediations?limit=100")[1]["items"])


async def _async_call(fn: Any) -> Any:
    import asyncio

    return await asyncio.to_thread(fn)


def _async(fn: Any) -> Any:
    return _async_call(fn)
