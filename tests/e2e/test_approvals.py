"""Issue 15 acceptance: rollback requests with enforced approvals, through the daemon,
against the kwok control plane, with deploy history from Kafka.

One daemon and one namespace per scenario of plan 3.1.2 (each with a Deployment that
rolled out v1 then v2): for each scenario the right principals approve and the plan
runs once; the requester, a principal without the role and the same principal twice
are refused. A second daemon with its times scaled down (approvals.time_scale) shows
the escalation notice (Slack stand-in) and the expiry: nothing runs, even when the
last approval arrives late.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.api_client import ApiClient

from tests.e2e.daemon import RULES, Daemon
from tests.e2e.test_alertmanager_intake import wait_for
from tests.polling import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

REVISION = "deployment.kubernetes.io/revision"
PEOPLE = {
    "rita": ["tech-lead"],  # asks for the rollbacks; a tech lead herself
    "pam": ["product-manager"],
    "lee": ["tech-lead"],
    "dora": ["dba"],
    "sam": ["security-lead"],
    "otto": ["ops-lead"],
    "nobody": [],
}
# Plan 3.1.2: the scenario, and who approves it (one principal per approver role).
SCENARIOS = {
    "severe_functional_defect": ("pam", "lee"),
    "data_consistency": ("dora", "lee"),
    "security_vulnerability": ("sam", "lee"),
    "performance_degradation": ("otto", "lee"),
    "user_experience": ("pam",),
    "third_party_failure": ("lee",),
}


def token(name: str) -> str:
    return f"e2e-{name}-token-7c1e5a9b3d2f4e6a8b0c1d2e"


def service_of(scenario: str) -> str:
    return scenario.replace("_", "-")


@dataclass
class World:
    daemon: Daemon
    namespaces: dict[str, str]  # service -> namespace


def template(image: str) -> client.V1PodTemplateSpec:
    return client.V1PodTemplateSpec(
        metadata=client.V1ObjectMeta(labels={"app": "app"}),
        spec=client.V1PodSpec(containers=[client.V1Container(name="app", image=image)]),
    )


def complete(d: Any) -> bool:
    s = d.status
    return (
        (s.observed_generation or 0) >= d.metadata.generation
        and (s.updated_replicas or 0) == d.spec.replicas
        and (s.available_replicas or 0) == d.spec.replicas
    )


async def kube_api(kube: Any) -> ApiClient:
    configuration = client.Configuration()
    await config.load_kube_config(
        config_file=kube.endpoints["kubeconfig"], client_configuration=configuration
    )
    return ApiClient(configuration=configuration)


async def released_twice(kube: Any, namespaces: list[str]) -> None:
    """In each namespace a Deployment `app` that rolled out v1, then v2 (both healthy)."""
    async with await kube_api(kube) as api:
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)

        async def one(namespace: str) -> None:
            await core.create_namespace(
                client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace))
            )
            await eventually(
                lambda: core.list_namespaced_service_account(namespace),
                lambda sas: any(sa.metadata.name == "default" for sa in sas.items),
                timeout=60, what=f"default SA in {namespace}",
            )  # fmt: skip
            body = client.V1Deployment(
                metadata=client.V1ObjectMeta(name="app"),
                spec=client.V1DeploymentSpec(
                    replicas=1, selector=client.V1LabelSelector(match_labels={"app": "app"}),
                    template=template("registry.example/app:v1"),
                ),
            )  # fmt: skip
            await apps.create_namespaced_deployment(namespace, body)
            for image, revision in (("v1", "1"), ("v2", "2")):
                if image == "v2":
                    await apps.patch_namespaced_deployment(
                        "app", namespace,
                        {"spec": {"template": template(f"registry.example/app:{image}").to_dict()}},
                    )  # fmt: skip
                await eventually(
                    lambda: apps.read_namespaced_deployment("app", namespace),
                    lambda d, r=revision: complete(d)  # type: ignore[misc]
                    and (d.metadata.annotations or {}).get(REVISION) == r,
                    timeout=90, what=f"{image} rolled out in {namespace}",
                )  # fmt: skip

        await asyncio.gather(*(one(namespace) for namespace in namespaces))


async def deploy_events(kafka: Any, topic: str, namespaces: dict[str, str]) -> None:
    """What the CD pipeline reported: v1 two hours ago, v2 ten minutes ago."""
    now = datetime.now(UTC)
    producer = AIOKafkaProducer(bootstrap_servers=kafka.endpoints["kafka_bootstrap"])
    await producer.start()
    try:
        for service, namespace in namespaces.items():
            for revision, at in ((1, now - timedelta(hours=2)), (2, now - timedelta(minutes=10))):
                event = {
                    "specversion": "1.0", "id": f"deploy-{namespace}-{revision}",
                    "source": "ci/deployer", "type": "io.remediator.deployment.succeeded",
                    "time": at.isoformat(),
                    "data": {"service": service, "namespace": namespace,
                             "version": f"v{revision}", "revision": str(revision),
                             "previous_revision": str(revision - 1)},
                }  # fmt: skip
                await producer.send_and_wait(topic, orjson.dumps(event), key=service.encode())
    finally:
        await producer.stop()


def build_world(
    workdir: Path,
    kube: Any,
    kafka: Any,
    scenarios: list[str],
    extra_env: dict[str, str],
    slack_users: dict[str, str] | None = None,
) -> World:
    """``slack_users``: the Slack user each person clicks as (principals' slack_users)."""
    tag = uuid.uuid4().hex[:6]
    namespaces = {service_of(s): f"ap-{tag}-{n}" for n, s in enumerate(scenarios)}
    asyncio.run(released_twice(kube, list(namespaces.values())))
    topic = f"deployments-{tag}"
    asyncio.run(deploy_events(kafka, topic, namespaces))
    rules = workdir / "rules"
    rules.mkdir(parents=True)
    for name in ("defaults.yaml", "remediation.yaml"):
        shutil.copy(RULES / name, rules / name)
    catalog = {
        "services": {
            service: {
                "namespace": namespace,
                "workload": "app",
                "rollback": {"strategy": "rolling"},
            }
            for service, namespace in namespaces.items()
        }
    }
    (rules / "catalog.yaml").write_text(orjson.dumps(catalog).decode())
    daemon = Daemon(
        workdir / "daemon",
        rules=rules,
        principals=[
            {
                "name": name,
                "roles": ["read", "operate"],
                "approver_roles": roles,
                "token": token(name),
                **({"slack_users": [slack_users[name]]} if name in (slack_users or {}) else {}),
            }
            for name, roles in PEOPLE.items()
        ],
        extra_env={
            "REMEDIATOR_KUBERNETES__KUBECONFIG": kube.endpoints["kubeconfig"],
            "REMEDIATOR_KUBERNETES__INSTANCE_ID": f"e2e-{tag}",
            "REMEDIATOR_KUBERNETES__ROLLOUT_TIMEOUT_SECONDS": "90",
            "REMEDIATOR_KAFKA__BOOTSTRAP_SERVERS": kafka.endpoints["kafka_bootstrap"],
            "REMEDIATOR_KAFKA__DEPLOY_TOPICS": topic,
            "REMEDIATOR_KAFKA__GROUP_ID": f"g-{topic}",
            **extra_env,
        },
    )
    daemon.start()
    wait_for(
        lambda: sum(s["source"] == "kafka" for s in daemon.signals()) == 2 * len(namespaces),
        timeout=90, what="the deploy events journaled",
    )  # fmt: skip
    return World(daemon=daemon, namespaces=namespaces)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, kube: Any, kafka: Any) -> Iterator[World]:
    built = build_world(tmp_path_factory.mktemp("approvals"), kube, kafka, list(SCENARIOS), {})
    yield built
    assert built.daemon.stop() == 0


def request(daemon: Daemon, scenario: str, *, who: str = "rita") -> dict[str, Any]:
    status, item = daemon.post(
        "/api/v1/rollback-requests",
        {"service": service_of(scenario), "scenario": scenario,
         "reason": f"{scenario}: users are hurt since v2"},
        token=token(who),
    )  # fmt: skip
    assert status == 201, item
    assert item["status"] == "awaiting_approval", item
    return dict(item)


def answer(daemon: Daemon, rid: str, who: str, verb: str = "approve") -> tuple[int, Any]:
    return daemon.post(f"/api/v1/remediations/{rid}/{verb}", {"comment": f"{who} agrees"},
                       token=token(who))  # fmt: skip


def remediation(daemon: Daemon, rid: str) -> dict[str, Any]:
    status, item = daemon.get(f"/api/v1/remediations/{rid}")
    assert status == 200, item
    return dict(item)


async def deployment(kube: Any, namespace: str) -> Any:
    async with await kube_api(kube) as api:
        return await client.AppsV1Api(api).read_namespaced_deployment("app", namespace)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_the_right_principals_approve_and_the_plan_runs_once(
    world: World, kube: Any, scenario: str
) -> None:
    daemon, approvers = world.daemon, SCENARIOS[scenario]
    item = request(daemon, scenario)
    rid = item["id"]
    assert item["approval"]["requester"] == "rita"
    assert item["decision"]["steps"][0]["params"]["to_revision"] == 1
    # Refused, each without effect: the requester (a tech lead herself), a principal
    # without a named approver role.
    status, refused = answer(daemon, rid, "rita")
    assert status == 409 and "four eyes" in refused["error"]
    status, refused = answer(daemon, rid, "nobody")
    assert status == 403 and refused["error"].startswith("forbidden: approving needs one of")
    for n, who in enumerate(approvers, 1):
        status, item = answer(daemon, rid, who)
        assert status == 200, item
        if n < len(approvers):
            assert item["status"] == "awaiting_approval"
            assert remediation(daemon, rid)["steps"] == []  # nothing runs on one approval
            status, refused = answer(daemon, rid, who)  # the same person again
            assert status == 409 and "a principal counts once" in refused["error"]
    done = await eventually(
        lambda: asyncio.to_thread(remediation, daemon, rid),
        lambda r: r["status"] in ("succeeded", "failed", "needs_human"),
        timeout=120, what=f"{rid} to finish",
    )  # fmt: skip
    assert done["status"] == "succeeded", done
    assert [s["kind"] for s in done["steps"]].count("rollout_undo") == 1
    assert [a["principal"] for a in done["approval"]["approvers"]] == list(approvers)
    final = await deployment(kube, world.namespaces[service_of(scenario)])
    assert final.spec.template.spec.containers[0].image == "registry.example/app:v1"
    assert final.metadata.annotations[REVISION] == "3"  # undone once: v1 renumbered, once
    status, record = daemon.get(f"/api/v1/remediations/{rid}/record?format=json")
    assert status == 200
    assert record["approval"]["requester"] == "rita"
    assert record["approval"]["response"] == "met"
    assert [a["principal"] for a in record["approval"]["answers"]] == list(approvers)


@pytest.fixture
def hurried(tmp_path: Path, kube: Any, kafka: Any, slack_api: Any) -> Iterator[World]:
    """A daemon whose response times and expiries are scaled down: an hour is 7.2 s."""
    slack_api.reset()
    built = build_world(tmp_path, kube, kafka, ["performance_degradation"], {
        "REMEDIATOR_APPROVALS__TIME_SCALE": "0.002",
        "REMEDIATOR_APPROVALS__CHECK_INTERVAL_SECONDS": "0.5",
        "REMEDIATOR_APPROVALS__ESCALATION_CHANNEL": "#remediator",
        "REMEDIATOR_SLACK__TOKEN": slack_api.endpoints["slack_token"],
        "REMEDIATOR_SLACK__BASE_URL": slack_api.endpoints["slack_api_url"],
        "REMEDIATOR_SLACK__DEFAULT_CHANNEL": "#alerts",
    })  # fmt: skip
    yield built
    assert built.daemon.stop() == 0
    slack_api.reset()


async def test_no_answer_in_time_escalates_then_expires_and_nothing_runs_afterwards(
    hurried: World, kube: Any, slack_api: Any
) -> None:
    daemon = hurried.daemon
    item = request(daemon, "performance_degradation")  # ops lead + tech lead, within 1 h
    rid = item["id"]
    status, item = answer(daemon, rid, "lee")  # one of two: it still waits
    assert (status, item["status"]) == (200, "awaiting_approval")
    # The response time passes: a second message, to the escalation channel, naming who
    # has not answered.
    calls = await asyncio.to_thread(slack_api.wait_for_calls, "chat.postMessage", 2, timeout=60)
    [escalation] = [c for c in calls if c.args["channel"] == "#remediator"]
    text = orjson.dumps(escalation.args["blocks"]).decode()
    # (the harness's own operator holds every approver role, so it is named too)
    assert "Not answered: ops-lead (e2e-operator, otto)" in text
    assert "requested by rita" in text and "tech-lead" not in text.split("Not answered")[1]
    assert remediation(daemon, rid)["approval"]["escalated_at"] is not None
    # The hard expiry passes: it ends expired ...
    expired = await eventually(
        lambda: asyncio.to_thread(remediation, daemon, rid),
        lambda r: r["status"] != "awaiting_approval",
        timeout=90, what=f"{rid} to expire",
    )  # fmt: skip
    assert expired["status"] == "expired", expired
    # ... and the last approval, arriving late, runs nothing.
    status, refused = answer(daemon, rid, "otto")
    assert (status, refused["error"]) == (409, f"id: {rid} is expired, not awaiting approval")
    after = remediation(daemon, rid)
    assert (after["status"], after["steps"], after["claimed_by"]) == ("expired", [], None)
    final = await deployment(kube, hurried.namespaces["performance-degradation"])
    assert final.metadata.annotations[REVISION] == "2"  # untouched
    status, record = daemon.get(f"/api/v1/remediations/{rid}/record?format=json")
    assert record["approval"]["response"] == "missed"
    assert [e["step"] for e in record["timeline"]][-1] == "finished"
