"""``kubectl rollout status`` for Deployments: the same rules, as data instead of text.

kubectl (polymorphichelpers/rollout_status.go) decides, in this order:

1. ``metadata.generation > status.observedGeneration``: the controller has not seen
   the latest spec yet -> still progressing.
2. the Progressing condition has reason ``ProgressDeadlineExceeded`` -> failed.
3. ``status.updatedReplicas < spec.replicas`` -> progressing (new replicas pending).
4. ``status.replicas > status.updatedReplicas`` -> progressing (old replicas pending
   termination).
5. ``status.availableReplicas < status.updatedReplicas`` -> progressing.
6. otherwise complete.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from remediator.connectors.kubernetes.client import KubeClient, Ref
from remediator.connectors.kubernetes.revisions import revision_of

__all__ = ["RolloutStatus", "evaluate_rollout", "rollout_status", "wait_for_rollout"]

TIMED_OUT_REASON = "ProgressDeadlineExceeded"

RolloutState = Literal["complete", "progressing", "failed"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RolloutStatus:
    namespace: str
    deployment: str
    state: RolloutState
    message: str  # kubectl's wording, for humans and the journal
    reason: str | None  # ProgressDeadlineExceeded when failed
    revision: int | None
    generation: int
    observed_generation: int
    desired_replicas: int
    replicas: int
    updated_replicas: int
    available_replicas: int

    @property
    def complete(self) -> bool:
        return self.state == "complete"


def evaluate_rollout(deployment: Mapping[str, Any]) -> RolloutStatus:
    """Pure: the rollout status of one Deployment object (as the API returns it)."""
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    name = str(meta.get("name"))
    generation = int(meta.get("generation") or 0)
    observed = int(status.get("observedGeneration") or 0)
    desired = int(spec.get("replicas", 1))
    replicas = int(status.get("replicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)

    def result(state: RolloutState, message: str, reason: str | None = None) -> RolloutStatus:
        return RolloutStatus(
            namespace=str(meta.get("namespace")),
            deployment=name,
            state=state,
            message=message,
            reason=reason,
            revision=revision_of(deployment),
            generation=generation,
            observed_generation=observed,
            desired_replicas=desired,
            replicas=replicas,
            updated_replicas=updated,
            available_replicas=available,
        )

    if generation > observed:
        return result("progressing", "Waiting for deployment spec update to be observed...")
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == TIMED_OUT_REASON:
            return result(
                "failed", f'deployment "{name}" exceeded its progress deadline', TIMED_OUT_REASON
            )
    if updated < desired:
        return result(
            "progressing",
            f'Waiting for deployment "{name}" rollout to finish: '
            f"{updated} out of {desired} new replicas have been updated...",
        )
    if replicas > updated:
        return result(
            "progressing",
            f'Waiting for deployment "{name}" rollout to finish: '
            f"{replicas - updated} old replicas are pending termination...",
        )
    if available < updated:
        return result(
            "progressing",
            f'Waiting for deployment "{name}" rollout to finish: '
            f"{available} of {updated} updated replicas are available...",
        )
    return result("complete", f'deployment "{name}" successfully rolled out')


async def rollout_status(kube: KubeClient, *, namespace: str, deployment: str) -> RolloutStatus:
    obj = await kube.get(Ref("Deployment", namespace, deployment))
    return evaluate_rollout(obj)


async def wait_for_rollout(
    kube: KubeClient,
    *,
    namespace: str,
    deployment: str,
    timeout_seconds: float,
    poll_seconds: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> RolloutStatus:
    """Poll until the rollout is complete or failed, or ``timeout_seconds`` pass.

    Returns the last status seen; a still "progressing" result means the timeout
    passed. Outcomes are data, not exceptions: the executor decides what a failed or
    slow rollout means for the remediation. API errors propagate (mapped).
    """
    deadline = clock() + timeout_seconds
    while True:
        status = await rollout_status(kube, namespace=namespace, deployment=deployment)
        if status.state != "progressing":
            return status
        remaining = deadline - clock()
        if remaining <= 0:
            return status
        await sleep(min(poll_seconds, remaining))
