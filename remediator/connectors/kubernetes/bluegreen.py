"""Blue-green switch-back: point a Service's selector at the other colour, then check
that the Service's EndpointSlices really route to ready pods of that colour.

The switch is one merge patch of ``spec.selector[selector_key]`` (other selector keys
are kept) with a resourceVersion precondition. Traffic has moved only once the
endpointslice controller has rewritten the slices, so success is judged from the
EndpointSlices (discovery.k8s.io/v1, label ``kubernetes.io/service-name``), not from
the Service object.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from remediator.connectors.kubernetes.client import KubeClient, PatchType, Ref
from remediator.connectors.kubernetes.concurrency import apply_with_reread
from remediator.connectors.kubernetes.errors import ActionRefused

__all__ = [
    "EndpointsReadiness",
    "SelectorSwitch",
    "endpoints_ready_for",
    "switch_service_selector",
    "wait_endpoints_ready_for",
]

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclass(frozen=True, slots=True, kw_only=True)
class SelectorSwitch:
    namespace: str
    service: str
    selector_key: str
    from_value: str | None
    to_value: str
    changed: bool
    resource_version: str  # the Service's, after the patch (unchanged on dry run)
    dry_run: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointsReadiness:
    """What the Service's EndpointSlices route to right now."""

    ready: bool  # >= 1 ready endpoint, and every ready endpoint is a pod of the wanted version
    ready_endpoints: int  # ready endpoints backed by pods matching the selector
    foreign_ready_endpoints: int  # ready endpoints of any other pod (old colour, or unknown)
    not_ready_endpoints: int  # endpoints of wanted pods that are not ready yet
    wanted_pods: int  # pods currently matching the selector


async def switch_service_selector(
    kube: KubeClient,
    *,
    namespace: str,
    service: str,
    selector_key: str,
    to_value: str,
    dry_run: bool,
) -> SelectorSwitch:
    ref = Ref("Service", namespace, service)

    async def attempt(svc: dict[str, Any]) -> SelectorSwitch:
        return await _switch(kube, ref, svc, selector_key, to_value, dry_run=dry_run)

    return await apply_with_reread(kube, ref, attempt)


async def _switch(
    kube: KubeClient,
    ref: Ref,
    svc: dict[str, Any],
    selector_key: str,
    to_value: str,
    *,
    dry_run: bool,
) -> SelectorSwitch:
    namespace, service = ref.namespace, str(ref.name)
    selector = (svc.get("spec") or {}).get("selector") or {}
    if not selector:
        # A selector-less Service has hand-managed endpoints; switching would add one.
        raise ActionRefused("Service has no selector", target=str(ref), reason="no-selector")
    before = selector.get(selector_key)
    rv = svc["metadata"]["resourceVersion"]
    if before == to_value:
        return SelectorSwitch(
            namespace=namespace,
            service=service,
            selector_key=selector_key,
            from_value=before,
            to_value=to_value,
            changed=False,
            resource_version=rv,
            dry_run=dry_run,
        )
    patched = await kube.patch(
        ref,
        {"spec": {"selector": {selector_key: to_value}}},
        patch_type=PatchType.MERGE,
        resource_version=rv,
        dry_run=dry_run,
    )
    return SelectorSwitch(
        namespace=namespace,
        service=service,
        selector_key=selector_key,
        from_value=before,
        to_value=to_value,
        changed=True,
        resource_version=patched["metadata"]["resourceVersion"],
        dry_run=dry_run,
    )


async def endpoints_ready_for(
    kube: KubeClient, *, namespace: str, service: str, selector: Mapping[str, str]
) -> EndpointsReadiness:
    """Whether the Service routes only to ready pods matching ``selector`` (and to some)."""
    if not selector:
        raise ValueError("selector must name at least one label")
    label_selector = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
    pods = await kube.list_all(Ref("Pod", namespace), label_selector=label_selector)
    wanted = {p["metadata"]["uid"] for p in pods}
    slices = await kube.list_all(
        Ref("EndpointSlice", namespace), label_selector=f"{SERVICE_NAME_LABEL}={service}"
    )
    ready = foreign = not_ready = 0
    for endpoint_slice in slices:
        for endpoint in endpoint_slice.get("endpoints") or []:
            target = endpoint.get("targetRef") or {}
            is_wanted = target.get("kind") == "Pod" and target.get("uid") in wanted
            # Per the EndpointSlice API, a missing "ready" condition means ready.
            is_ready = (endpoint.get("conditions") or {}).get("ready", True) is not False
            if is_ready and is_wanted:
                ready += 1
            elif is_ready:
                foreign += 1
            elif is_wanted:
                not_ready += 1
    return EndpointsReadiness(
        ready=ready > 0 and foreign == 0,
        ready_endpoints=ready,
        foreign_ready_endpoints=foreign,
        not_ready_endpoints=not_ready,
        wanted_pods=len(wanted),
    )


async def wait_endpoints_ready_for(
    kube: KubeClient,
    *,
    namespace: str,
    service: str,
    selector: Mapping[str, str],
    timeout_seconds: float,
    poll_seconds: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> EndpointsReadiness:
    """Poll :func:`endpoints_ready_for` until ready or timeout; return the last result."""
    deadline = clock() + timeout_seconds
    while True:
        result = await endpoints_ready_for(
            kube, namespace=namespace, service=service, selector=selector
        )
        remaining = deadline - clock()
        if result.ready or remaining <= 0:
            return result
        await sleep(min(poll_seconds, remaining))
