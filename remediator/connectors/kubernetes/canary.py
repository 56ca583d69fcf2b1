"""Canary abort on a Gateway API HTTPRoute: all traffic back to the stable backend.

In every rule that routes to both backends, the canary's weight becomes 0 and the
stable backend's weight becomes the rule's former total of the two, so the stable
share of any *other* backends in that rule is unchanged. The route is changed with
one JSON patch naming each weight's exact position, guarded by the route's
resourceVersion.

Scaling the Deployments afterwards is :func:`scale.scale`; the stable Deployment's
replica count from before the canary started is read from the
``remediator.io/pre-canary-replicas`` annotation (see :func:`pre_canary_replicas`).
The deploy tool may write it when it starts the canary; otherwise remediator writes
it when the canary's deploy event arrives (:func:`record_pre_canary_replicas`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from remediator.connectors.kubernetes.client import KubeClient, PatchType, Ref
from remediator.connectors.kubernetes.concurrency import apply_with_reread
from remediator.connectors.kubernetes.errors import ActionRefused

__all__ = [
    "PRE_CANARY_RELEASE",
    "PRE_CANARY_REPLICAS",
    "CanaryWeights",
    "PreCanaryRecord",
    "pre_canary_replicas",
    "record_pre_canary_replicas",
    "set_canary_weight_zero",
]

PRE_CANARY_REPLICAS = "remediator.io/pre-canary-replicas"
# Set only by remediator, next to the count it recorded: the canary release it was
# recorded for. A count without it was written by the deploy tool and is left alone.
PRE_CANARY_RELEASE = "remediator.io/pre-canary-release"
_DEFAULT_WEIGHT = 1  # Gateway API: an omitted backendRef weight is 1


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleWeights:
    rule: int  # index in spec.rules
    canary_before: int
    stable_before: int
    stable_after: int  # canary_after is always 0


@dataclass(frozen=True, slots=True, kw_only=True)
class CanaryWeights:
    namespace: str
    route: str
    canary_backend: str
    stable_backend: str
    rules: tuple[RuleWeights, ...]
    changed: bool
    resource_version: str  # the route's, after the patch (unchanged on dry run)
    dry_run: bool


async def set_canary_weight_zero(
    kube: KubeClient,
    *,
    namespace: str,
    route: str,
    canary_backend: str,
    stable_backend: str,
    dry_run: bool,
) -> CanaryWeights:
    ref = Ref("HTTPRoute", namespace, route)

    async def attempt(obj: dict[str, Any]) -> CanaryWeights:
        return await _zero(kube, ref, obj, canary_backend, stable_backend, dry_run=dry_run)

    return await apply_with_reread(kube, ref, attempt)


async def _zero(
    kube: KubeClient,
    ref: Ref,
    obj: dict[str, Any],
    canary_backend: str,
    stable_backend: str,
    *,
    dry_run: bool,
) -> CanaryWeights:
    ops: list[dict[str, Any]] = []
    rules: list[RuleWeights] = []
    for i, rule in enumerate((obj.get("spec") or {}).get("rules") or []):
        refs = rule.get("backendRefs") or []
        canary = _index(refs, canary_backend)
        if canary is None:
            continue
        stable = _index(refs, stable_backend)
        if stable is None:
            raise ActionRefused(
                f"rule {i} routes to {canary_backend!r} but not to {stable_backend!r}",
                target=str(ref),
                reason="no-stable-backend",
            )
        canary_w = int(refs[canary].get("weight", _DEFAULT_WEIGHT))
        stable_w = int(refs[stable].get("weight", _DEFAULT_WEIGHT))
        # A rule whose weights were all 0 would send nothing anywhere; give stable 1.
        total = canary_w + stable_w or _DEFAULT_WEIGHT
        rules.append(
            RuleWeights(rule=i, canary_before=canary_w, stable_before=stable_w, stable_after=total)
        )
        if canary_w != 0 or stable_w != total:
            base = f"/spec/rules/{i}/backendRefs"
            ops.append({"op": "add", "path": f"{base}/{canary}/weight", "value": 0})
            ops.append({"op": "add", "path": f"{base}/{stable}/weight", "value": total})
    if not rules:
        raise ActionRefused(
            f"no rule routes to canary backend {canary_backend!r}",
            target=str(ref),
            reason="no-canary-backend",
        )
    rv = obj["metadata"]["resourceVersion"]
    if ops:
        patched = await kube.patch(
            ref, ops, patch_type=PatchType.JSON, resource_version=rv, dry_run=dry_run
        )
        rv = patched["metadata"]["resourceVersion"]
    return CanaryWeights(
        namespace=ref.namespace,
        route=str(ref.name),
        canary_backend=canary_backend,
        stable_backend=stable_backend,
        rules=tuple(rules),
        changed=bool(ops),
        resource_version=rv,
        dry_run=dry_run,
    )


def _index(refs: list[Mapping[str, Any]], service: str) -> int | None:
    """Position of the backendRef naming Service ``service`` (core group, same namespace)."""
    found = [
        i
        for i, r in enumerate(refs)
        if r.get("name") == service
        and r.get("kind", "Service") == "Service"
        and r.get("group", "") == ""
        and "namespace" not in r
    ]
    if len(found) > 1:
        raise ActionRefused(
            f"backend {service!r} appears {len(found)} times in one rule",
            target=f"HTTPRoute backendRefs {service}",
            reason="ambiguous-backend",
        )
    return found[0] if found else None


async def pre_canary_replicas(kube: KubeClient, *, namespace: str, deployment: str) -> int | None:
    """The stable Deployment's ``remediator.io/pre-canary-replicas`` annotation, if set."""
    obj = await kube.get(Ref("Deployment", namespace, deployment))
    value = ((obj.get("metadata") or {}).get("annotations") or {}).get(PRE_CANARY_REPLICAS)
    if value is None:
        return None
    try:
        replicas = int(value)
    except ValueError:
        replicas = -1
    if replicas < 0:
        raise ActionRefused(
            f"annotation {PRE_CANARY_REPLICAS}={value!r} is not a replica count",
            target=f"Deployment {namespace}/{deployment}",
            reason="bad-annotation",
        )
    return replicas


@dataclass(frozen=True, slots=True, kw_only=True)
class PreCanaryRecord:
    namespace: str
    deployment: str
    release: str  # the canary release (deploy event revision or version)
    replicas: int | None  # the count kept in the annotation (None: none kept)
    recorded: bool  # written now
    detail: str


async def record_pre_canary_replicas(
    kube: KubeClient, *, namespace: str, deployment: str, release: str
) -> PreCanaryRecord:
    """Keep the stable Deployment's size for ``release``'s canary, for a later abort.

    Called when the canary's deploy event arrives. A redelivered event (same release)
    keeps the first count: by then the canary may have shrunk the stable side. A count
    the deploy tool wrote (no release annotation of ours) is the tool's and kept. Only
    metadata changes: no new ReplicaSet, no rollout.
    """
    ref = Ref("Deployment", namespace, deployment)

    async def attempt(obj: dict[str, Any]) -> PreCanaryRecord:
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        kept = annotations.get(PRE_CANARY_REPLICAS)
        ours = annotations.get(PRE_CANARY_RELEASE)

        def unchanged(detail: str) -> PreCanaryRecord:
            count = int(kept) if kept is not None and kept.isdigit() else None
            return PreCanaryRecord(namespace=namespace, deployment=deployment, release=release,
                                   replicas=count, recorded=False, detail=detail)  # fmt: skip

        if kept is not None and ours is None:
            return unchanged("the deploy tool recorded it")
        if ours == release:
            return unchanged(f"already recorded for {release}")
        replicas = int((obj.get("spec") or {}).get("replicas") or 0)
        if replicas == 0:
            return unchanged("the stable side runs no replicas: nothing to restore")
        await kube.patch(
            ref,
            {
                "metadata": {
                    "annotations": {PRE_CANARY_REPLICAS: str(replicas), PRE_CANARY_RELEASE: release}
                }
            },
            patch_type=PatchType.MERGE,
            resource_version=obj["metadata"]["resourceVersion"],
            dry_run=False,
        )
        return PreCanaryRecord(namespace=namespace, deployment=deployment, release=release,
                               replicas=replicas, recorded=True, detail="recorded")  # fmt: skip

    return await apply_with_reread(kube, ref, attempt)
