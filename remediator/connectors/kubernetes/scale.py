"""Scaling Deployments without ever fighting a HorizontalPodAutoscaler.

``scale`` sets ``spec.replicas`` through the scale subresource (what ``kubectl scale``
does). ``scale_up`` does the same unless an autoscaling/v2 HPA targets the
Deployment: then the HPA owns ``spec.replicas`` and would undo a direct change on its
next sync, so the HPA's ``minReplicas`` (and ``maxReplicas`` when needed) is raised
instead and the HPA scales the Deployment itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from remediator.connectors.kubernetes.client import KubeClient, PatchType, Ref
from remediator.connectors.kubernetes.concurrency import apply_with_reread, same_intent
from remediator.connectors.kubernetes.errors import ActionRefused, KubeConflict, KubeNotFound

if TYPE_CHECKING:
    from remediator.ports import ServiceFacts

__all__ = [
    "KubernetesFacts",
    "ScaleResult",
    "ScaleUpResult",
    "current_replicas",
    "find_hpa",
    "scale",
    "scale_up",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class ScaleResult:
    namespace: str
    deployment: str
    from_replicas: int
    to_replicas: int
    changed: bool
    resource_version: str  # the Deployment's, after the change (unchanged on dry run)
    dry_run: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ScaleUpResult:
    namespace: str
    deployment: str
    via: Literal["deployment", "hpa", "none"]  # none: already at or above the target
    from_replicas: int  # the Deployment's spec.replicas before
    to_replicas: int  # the replicas asked for (bounded by max_replicas)
    hpa: str | None = None
    from_min_replicas: int | None = None
    to_min_replicas: int | None = None
    from_max_replicas: int | None = None
    to_max_replicas: int | None = None
    dry_run: bool


async def scale(
    kube: KubeClient, *, namespace: str, deployment: str, replicas: int, dry_run: bool
) -> ScaleResult:
    """Set the Deployment's replicas (up or down) via the scale subresource."""
    if replicas < 0:
        raise ValueError(f"replicas must be >= 0, got {replicas}")
    ref = Ref("Deployment", namespace, deployment)

    async def attempt(current: dict[str, Any]) -> ScaleResult:
        return await _scale(kube, ref, current, replicas, dry_run=dry_run)

    return await apply_with_reread(kube, ref, attempt, subresource="scale")


async def _scale(
    kube: KubeClient, ref: Ref, current: dict[str, Any], replicas: int, *, dry_run: bool
) -> ScaleResult:
    namespace, deployment = ref.namespace, str(ref.name)
    before = int((current.get("spec") or {}).get("replicas") or 0)
    rv = current["metadata"]["resourceVersion"]
    if before == replicas:
        return ScaleResult(
            namespace=namespace,
            deployment=deployment,
            from_replicas=before,
            to_replicas=replicas,
            changed=False,
            resource_version=rv,
            dry_run=dry_run,
        )
    patched = await kube.patch(
        ref,
        {"spec": {"replicas": replicas}},
        patch_type=PatchType.MERGE,
        resource_version=rv,
        dry_run=dry_run,
        subresource="scale",
    )
    return ScaleResult(
        namespace=namespace,
        deployment=deployment,
        from_replicas=before,
        to_replicas=replicas,
        changed=True,
        resource_version=patched["metadata"]["resourceVersion"],
        dry_run=dry_run,
    )


async def find_hpa(kube: KubeClient, *, namespace: str, deployment: str) -> dict[str, Any] | None:
    """The autoscaling/v2 HPA whose scaleTargetRef is this Deployment, if any.

    Two HPAs on one target is a misconfiguration the HPA controller itself refuses
    (AmbiguousSelector); acting on it would be a guess, so it is refused here too.
    """
    matches = [
        hpa
        for hpa in await kube.list_all(Ref("HorizontalPodAutoscaler", namespace))
        if _targets(hpa, deployment)
    ]
    if len(matches) > 1:
        names = ", ".join(h["metadata"]["name"] for h in matches)
        raise ActionRefused(
            f"several HPAs target it ({names})",
            target=str(Ref("Deployment", namespace, deployment)),
            reason="ambiguous-hpa",
        )
    return matches[0] if matches else None


def _targets(hpa: Mapping[str, Any], deployment: str) -> bool:
    target = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
    return (
        target.get("kind") == "Deployment"
        and target.get("name") == deployment
        and str(target.get("apiVersion", "apps/v1")).startswith("apps/")
    )


async def scale_up(
    kube: KubeClient,
    *,
    namespace: str,
    deployment: str,
    target_replicas: int,
    max_replicas: int,
    dry_run: bool,
) -> ScaleUpResult:
    """Make at least ``min(target_replicas, max_replicas)`` replicas run; never scale down."""
    if target_replicas < 1 or max_replicas < 1:
        raise ValueError("target_replicas and max_replicas must be >= 1")
    want = min(target_replicas, max_replicas)
    ref = Ref("Deployment", namespace, deployment)
    current = int((await kube.get(ref, subresource="scale")).get("spec", {}).get("replicas") or 0)
    hpa = await find_hpa(kube, namespace=namespace, deployment=deployment)
    if hpa is None:
        if current >= want:
            return ScaleUpResult(
                namespace=namespace,
                deployment=deployment,
                via="none",
                from_replicas=current,
                to_replicas=current,
                dry_run=dry_run,
            )
        done = await scale(
            kube, namespace=namespace, deployment=deployment, replicas=want, dry_run=dry_run
        )
        return ScaleUpResult(
            namespace=namespace,
            deployment=deployment,
            via="deployment",
            from_replicas=done.from_replicas,
            to_replicas=want,
            dry_run=dry_run,
        )

    spec = hpa["spec"]
    old_min = int(spec.get("minReplicas", 1))
    old_max = int(spec["maxReplicas"])
    new_min = max(old_min, want)
    new_max = max(old_max, new_min)  # new_min <= max_replicas, so this stays bounded
    result = ScaleUpResult(
        namespace=namespace,
        deployment=deployment,
        via="hpa" if new_min != old_min else "none",
        from_replicas=current,
        to_replicas=max(current, want),
        hpa=hpa["metadata"]["name"],
        from_min_replicas=old_min,
        to_min_replicas=new_min,
        from_max_replicas=old_max,
        to_max_replicas=new_max,
        dry_run=dry_run,
    )
    if new_min == old_min:
        return result
    hpa_ref = Ref("HorizontalPodAutoscaler", namespace, hpa["metadata"]["name"])

    async def attempt(fresh: dict[str, Any]) -> None:
        # The HPA writes its status every sync; a spec change since the first read
        # (someone edited the bounds) fails apply_with_reread's same-intent check.
        await kube.patch(
            hpa_ref,
            {"spec": {"minReplicas": new_min, "maxReplicas": new_max}},
            patch_type=PatchType.MERGE,
            resource_version=fresh["metadata"]["resourceVersion"],
            dry_run=dry_run,
        )

    await _patch_unchanged_hpa(kube, hpa_ref, hpa, attempt)
    return result


async def _patch_unchanged_hpa(
    kube: KubeClient,
    ref: Ref,
    decided_on: dict[str, Any],
    attempt: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    async def guarded(fresh: dict[str, Any]) -> None:
        if not same_intent(decided_on, fresh):
            raise KubeConflict("changed since scale_up read it", target=str(ref), status=409)
        await attempt(fresh)

    await apply_with_reread(kube, ref, guarded)


async def current_replicas(
    kube: KubeClient, *, namespace: str, deployment: str
) -> tuple[int, int | None]:
    """(spec.replicas, the HPA's maxReplicas or None when no HPA targets it)."""
    scale_obj = await kube.get(Ref("Deployment", namespace, deployment), subresource="scale")
    current = int((scale_obj.get("spec") or {}).get("replicas") or 0)
    hpa = await find_hpa(kube, namespace=namespace, deployment=deployment)
    return current, (int(hpa["spec"]["maxReplicas"]) if hpa else None)


class KubernetesFacts:
    """The engine's ``ServiceFacts`` port: replicas of the Deployment behind a service.

    ``deployments`` maps a service name to its Deployment's name (same namespace).
    Unknown services and missing Deployments are ``None`` ("unknown"), as the port
    asks; other API errors propagate (mapped).
    """

    def __init__(self, kube: KubeClient, *, deployments: Mapping[str, str]) -> None:
        self._kube = kube
        self._deployments = dict(deployments)

    async def replicas(self, *, service: str, namespace: str) -> tuple[int, int | None] | None:
        deployment = self._deployments.get(service)
        if deployment is None:
            return None
        try:
            return await current_replicas(self._kube, namespace=namespace, deployment=deployment)
        except KubeNotFound:
            return None


if TYPE_CHECKING:
    # mypy proves KubernetesFacts satisfies the engine's port.
    def _conforms(facts: KubernetesFacts) -> ServiceFacts:
        return facts
