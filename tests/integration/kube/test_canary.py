"""Canary abort: HTTPRoute weights to stable, canary scaled to 0, stable back to its size."""

from __future__ import annotations

from typing import Any

import pytest

from remediator.connectors.kubernetes.canary import (
    PRE_CANARY_REPLICAS,
    pre_canary_replicas,
    set_canary_weight_zero,
)
from remediator.connectors.kubernetes.client import KubeClient, Ref
from remediator.connectors.kubernetes.errors import ActionRefused
from remediator.connectors.kubernetes.scale import scale
from tests.integration.kube.conftest import deployment, eventually

pytestmark = pytest.mark.integration


def route(rules: list[list[dict[str, Any]]]) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "web"},
        "spec": {
            "parentRefs": [{"name": "gw"}],
            "rules": [{"backendRefs": refs} for refs in rules],
        },
    }


def weights(obj: dict[str, Any]) -> list[dict[str, int]]:
    return [
        {ref["name"]: ref["weight"] for ref in rule["backendRefs"]} for rule in obj["spec"]["rules"]
    ]


async def test_abort_canary(kc: KubeClient, ns: str) -> None:
    stable = deployment("web-stable", "example/web:1", replicas=2)
    stable["metadata"]["annotations"] = {PRE_CANARY_REPLICAS: "3"}
    await kc.create(Ref("Deployment", ns, "web-stable"), stable, dry_run=False)
    await kc.create(
        Ref("Deployment", ns, "web-canary"),
        deployment("web-canary", "example/web:2", replicas=1),
        dry_run=False,
    )
    route_ref = Ref("HTTPRoute", ns, "web")
    await kc.create(
        route_ref,
        route(
            [
                [
                    {"name": "web-stable", "port": 80, "weight": 90},
                    {"name": "web-canary", "port": 80, "weight": 10},
                ],
                # No weights: both default to 1; another backend's share is untouched.
                [
                    {"name": "web-canary", "port": 80},
                    {"name": "web-stable", "port": 80},
                    {"name": "other", "port": 80, "weight": 5},
                ],
                [{"name": "static", "port": 80}],
            ]
        ),
        dry_run=False,
    )
    objs = {
        "route": route_ref,
        "stable": Ref("Deployment", ns, "web-stable"),
        "canary": Ref("Deployment", ns, "web-canary"),
    }
    before = {k: await kc.get(r) for k, r in objs.items()}

    # Dry run: every step answers, nothing changes.
    dry = await set_canary_weight_zero(
        kc,
        namespace=ns,
        route="web",
        canary_backend="web-canary",
        stable_backend="web-stable",
        dry_run=True,
    )
    assert dry.changed
    await scale(kc, namespace=ns, deployment="web-canary", replicas=0, dry_run=True)
    await scale(kc, namespace=ns, deployment="web-stable", replicas=3, dry_run=True)
    after_dry = {k: await kc.get(r) for k, r in objs.items()}
    assert after_dry["route"] == before["route"]
    for k in ("stable", "canary"):
        assert after_dry[k]["spec"] == before[k]["spec"]
        assert after_dry[k]["metadata"]["generation"] == before[k]["metadata"]["generation"]

    result = await set_canary_weight_zero(
        kc,
        namespace=ns,
        route="web",
        canary_backend="web-canary",
        stable_backend="web-stable",
        dry_run=False,
    )
    assert [(r.rule, r.canary_before, r.stable_before, r.stable_after) for r in result.rules] == [
        (0, 10, 90, 100),
        (1, 1, 1, 2),
    ]
    assert weights(await kc.get(route_ref)) == [
        {"web-stable": 100, "web-canary": 0},
        {"web-canary": 0, "web-stable": 2, "other": 5},
        {"static": 1},  # the API defaults omitted weights to 1
    ]
    again = await set_canary_weight_zero(
        kc,
        namespace=ns,
        route="web",
        canary_backend="web-canary",
        stable_backend="web-stable",
        dry_run=False,
    )
    assert not again.changed

    target = await pre_canary_replicas(kc, namespace=ns, deployment="web-stable")
    assert target == 3
    down = await scale(kc, namespace=ns, deployment="web-canary", replicas=0, dry_run=False)
    up = await scale(kc, namespace=ns, deployment="web-stable", replicas=target, dry_run=False)
    assert (down.from_replicas, down.to_replicas, up.from_replicas, up.to_replicas) == (1, 0, 2, 3)
    await eventually(
        lambda: kc.get(objs["stable"]),
        lambda d: (d.get("status") or {}).get("availableReplicas") == 3,
        what="stable at 3 available",
    )
    await eventually(
        lambda: kc.get(objs["canary"]),
        lambda d: not (d.get("status") or {}).get("replicas"),
        what="canary at 0",
    )

    with pytest.raises(ActionRefused) as refused:
        await set_canary_weight_zero(
            kc,
            namespace=ns,
            route="web",
            canary_backend="nope",
            stable_backend="web-stable",
            dry_run=False,
        )
    assert refused.value.reason == "no-canary-backend"
