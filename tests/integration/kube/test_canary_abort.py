"""A canary abort puts the stable side back at its size from before the canary.

The canary shrinks the stable Deployment while it takes traffic; the abort must scale
the stable side back to its pre-canary size, not to the size the canary left it at.
The whole path runs on the kube peer: the deploy event records the stable size, the
canary shrinks it, the rules plan the abort from what the cluster reports, and the
step runner carries out every step.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from remediator.connectors.kubernetes.canary import PRE_CANARY_RELEASE, PRE_CANARY_REPLICAS
from remediator.connectors.kubernetes.client import KubeClient, PatchType, Ref
from remediator.connectors.kubernetes.scale import KubernetesFacts, scale
from remediator.connectors.kubernetes.steps import KubernetesStepRunner
from remediator.domain.plans import Plan, StepKind, explain
from remediator.domain.rules import DeployRecord, RulePack, ServiceState, decide, load_rule_pack
from remediator.domain.signals import Signal, Source, Status
from remediator.rulefiles import read_rule_files
from tests.integration.kube.conftest import deployment, eventually, patch_as_admin
from tests.integration.kube.test_canary import route, weights
from tests.integration.kube.test_executor_race import RULES

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)


def canary_pack(ns: str) -> RulePack:
    """The shipped rules with "search", a canary service, catalogued in ``ns``."""
    files = {k: v for k, v in read_rule_files(RULES).items() if not k.endswith("catalog.yaml")}
    files["catalog.yaml"] = (
        f"services:\n  search:\n    namespace: {ns}\n    workload: search-stable\n"
        "    rollback: {strategy: canary, route_name: search, "
        "canary_deployment: search-canary, stable_deployment: search-stable}\n"
    )
    return load_rule_pack(files)


def deploy_event(ns: str, revision: str) -> Signal:
    return Signal(
        key=f"deploy-{uuid.uuid4().hex}", source=Source.KAFKA, kind="deployment.succeeded",
        status=Status.EVENT, service="search", namespace=ns,
        labels={"service": "search", "namespace": ns, "revision": revision},
        annotations={}, starts_at=NOW, ends_at=None, received_at=NOW,
    )  # fmt: skip


def latency_alert(ns: str) -> Signal:
    return Signal(
        key=f"am-{uuid.uuid4().hex}", source=Source.ALERTMANAGER, kind="HighLatencyP99",
        status=Status.FIRING, service="search", namespace=ns,
        labels={"alertname": "HighLatencyP99", "service": "search", "namespace": ns},
        annotations={}, starts_at=NOW - timedelta(minutes=5), ends_at=None, received_at=NOW,
    )  # fmt: skip


async def stable_route_and_canary(kc: KubeClient, ns: str, *, stable_replicas: int) -> None:
    await kc.create(Ref("Deployment", ns, "search-stable"),
                    deployment("search-stable", "search:1", replicas=stable_replicas),
                    dry_run=False)  # fmt: skip
    await kc.create(Ref("Deployment", ns, "search-canary"),
                    deployment("search-canary", "search:2", replicas=0), dry_run=False)  # fmt: skip
    body = route([[{"name": "search-stable", "port": 80, "weight": 100},
                   {"name": "search-canary", "port": 80, "weight": 0}]])  # fmt: skip
    body["metadata"]["name"] = "search"
    await kc.create(Ref("HTTPRoute", ns, "search"), body, dry_run=False)


async def canary_takes_half(kc: KubeClient, ns: str) -> None:
    """What a canary tool does: canary up, stable down, traffic split."""
    await scale(kc, namespace=ns, deployment="search-canary", replicas=2, dry_run=False)
    await scale(kc, namespace=ns, deployment="search-stable", replicas=1, dry_run=False)
    await patch_as_admin(
        kc,
        Ref("HTTPRoute", ns, "search"),
        [{"op": "replace", "path": "/spec/rules/0/backendRefs/0/weight", "value": 50},
         {"op": "replace", "path": "/spec/rules/0/backendRefs/1/weight", "value": 50}],
        patch_type=PatchType.JSON,
    )  # fmt: skip


async def abort_plan(kc: KubeClient, ns: str, pack: RulePack) -> Plan:
    facts = await KubernetesFacts(kc, deployments={"search": "search-stable"}).replicas(
        service="search", namespace=ns
    )
    assert facts is not None and facts[0] == 1  # what the canary left the stable side at
    state = ServiceState(
        current_replicas=facts[0],
        deploys=(
            DeployRecord(revision="1", finished_at=NOW - timedelta(days=1), healthy=True),
            DeployRecord(revision="2", finished_at=NOW - timedelta(minutes=10)),
        ),
    )
    decision = decide(latency_alert(ns), pack=pack, state=state, now=NOW)
    assert isinstance(decision, Plan), explain(decision)
    return decision


async def test_abort_scales_the_stable_side_back_to_its_pre_canary_size(
    kc: KubeClient, ns: str
) -> None:
    pack = canary_pack(ns)
    runner = KubernetesStepRunner(kube=kc, pack=pack, poll_seconds=0.2)
    await stable_route_and_canary(kc, ns, stable_replicas=3)
    stable = Ref("Deployment", ns, "search-stable")

    await runner.after_deploy(deploy_event(ns, "2"))  # the canary of release 2 starts
    await canary_takes_half(kc, ns)
    # The same event again (a redelivery) must not record the shrunk size.
    await runner.after_deploy(deploy_event(ns, "2"))
    annotations = (await kc.get(stable))["metadata"]["annotations"]
    assert (annotations[PRE_CANARY_REPLICAS], annotations[PRE_CANARY_RELEASE]) == ("3", "2")

    plan = await abort_plan(kc, ns, pack)
    context: dict[str, Any] = {}
    for step in plan.steps:
        if step.kind in (StepKind.NOTIFY, StepKind.VERIFY_HEALTH):
            continue
        await runner.run(step, service="search", dry_run=False, context=context)

    assert weights(await kc.get(Ref("HTTPRoute", ns, "search"))) == [
        {"search-stable": 100, "search-canary": 0}
    ]
    await eventually(lambda: kc.get(stable),
                     lambda d: d["spec"]["replicas"] == 3
                     and (d.get("status") or {}).get("availableReplicas") == 3,
                     what="stable back at 3 available replicas")  # fmt: skip
    canary = await kc.get(Ref("Deployment", ns, "search-canary"))
    assert canary["spec"]["replicas"] == 0


async def test_a_size_the_deploy_tool_recorded_is_kept(kc: KubeClient, ns: str) -> None:
    pack = canary_pack(ns)
    runner = KubernetesStepRunner(kube=kc, pack=pack)
    await stable_route_and_canary(kc, ns, stable_replicas=2)
    stable = Ref("Deployment", ns, "search-stable")
    await patch_as_admin(kc, stable, {"metadata": {"annotations": {PRE_CANARY_REPLICAS: "5"}}})
    generation = (await kc.get(stable))["metadata"]["generation"]

    await runner.after_deploy(deploy_event(ns, "7"))

    after = await kc.get(stable)
    assert after["metadata"]["annotations"][PRE_CANARY_REPLICAS] == "5"
    assert PRE_CANARY_RELEASE not in after["metadata"]["annotations"]
    assert after["metadata"]["generation"] == generation  # no rollout either way
