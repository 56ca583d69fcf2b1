"""Blue-green switch-back, judged by the Service's EndpointSlices on the real control plane."""

from __future__ import annotations

import pytest

from remediator.connectors.kubernetes.bluegreen import (
    endpoints_ready_for,
    switch_service_selector,
    wait_endpoints_ready_for,
)
from remediator.connectors.kubernetes.client import KubeClient, Ref
from tests.integration.kube.conftest import (
    NOT_READY_LABEL,
    create_and_roll_out,
    deployment,
    eventually,
)

pytestmark = pytest.mark.integration

BLUE = {"svc": "web", "colour": "blue"}
GREEN = {"svc": "web", "colour": "green"}


async def test_switch_back_to_blue_moves_endpoints(kc: KubeClient, ns: str) -> None:
    await create_and_roll_out(kc, ns, deployment("web-blue", "example/web:1", labels=BLUE))
    # The new colour is a bad release: its pods never become Ready.
    green = deployment("web-green", "example/web:2", labels={**GREEN, NOT_READY_LABEL: "true"})
    await kc.create(Ref("Deployment", ns, "web-green"), green, dry_run=False)
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": GREEN, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    svc_ref = Ref("Service", ns, "web")
    await kc.create(svc_ref, service, dry_run=False)

    # The endpointslice controller lists green's pods, not ready.
    on_green = await eventually(
        lambda: endpoints_ready_for(kc, namespace=ns, service="web", selector=GREEN),
        lambda r: r.not_ready_endpoints == 2,
        what="green endpoints listed",
    )
    assert not on_green.ready
    assert on_green.ready_endpoints == 0

    before = await kc.get(svc_ref)
    dry = await switch_service_selector(
        kc, namespace=ns, service="web", selector_key="colour", to_value="blue", dry_run=True
    )
    assert (dry.from_value, dry.to_value, dry.changed) == ("green", "blue", True)
    unchanged = await kc.get(svc_ref)
    assert unchanged["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert unchanged["spec"]["selector"] == GREEN

    switched = await switch_service_selector(
        kc, namespace=ns, service="web", selector_key="colour", to_value="blue", dry_run=False
    )
    assert switched.changed and switched.from_value == "green"
    assert (await kc.get(svc_ref))["spec"]["selector"] == BLUE  # other keys kept

    on_blue = await wait_endpoints_ready_for(
        kc, namespace=ns, service="web", selector=BLUE, timeout_seconds=30, poll_seconds=0.5
    )
    assert on_blue.ready, on_blue
    assert on_blue.ready_endpoints == on_blue.wanted_pods == 2
    assert on_blue.foreign_ready_endpoints == 0

    # Routing to blue means green is no longer what the Service serves.
    green_view = await endpoints_ready_for(kc, namespace=ns, service="web", selector=GREEN)
    assert not green_view.ready
    assert green_view.foreign_ready_endpoints == 2

    again = await switch_service_selector(
        kc, namespace=ns, service="web", selector_key="colour", to_value="blue", dry_run=False
    )
    assert not again.changed
