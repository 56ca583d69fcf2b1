"""``kubectl rollout undo`` and ``kubectl rollout restart`` for Deployments.

Undo follows kubectl's DeploymentRollbacker (polymorphichelpers/rollback.go):

* the target is the ReplicaSet owned by the Deployment whose
  ``deployment.kubernetes.io/revision`` annotation is the wanted revision; with no
  revision, the second-highest revision (the previous one);
* a paused Deployment is refused;
* the ReplicaSet's pod template, minus its ``pod-template-hash`` label, replaces
  ``spec.template``, and ``metadata.annotations`` become the Deployment's own
  bookkeeping annotations plus the ReplicaSet's other annotations; both in one JSON
  patch.

The deployment controller then adopts the old ReplicaSet again and gives it the next
revision number (so the restored revision disappears from its old number), exactly
as after ``kubectl rollout undo``.

Unlike kubectl, a revision is found by the pod template it named, not by its number
alone: kubectl looks only at each ReplicaSet's current number, so after one rollback
(revision 1 comes back as 3) "undo to 1" is "not found" there. Deploy history records
the number the release had when it was verified healthy; the ReplicaSet (one per pod
template, named by its hash) that had that number is still the same template, and the
controller lists its former numbers in ``deployment.kubernetes.io/revision-history``.
So a requested number matches the ReplicaSet whose current *or former* number it is,
and ``allowed_revisions`` is checked against all of that template's numbers.

Unlike kubectl, an undo to the revision that is already current is refused rather
than "skipped", and a resourceVersion precondition makes the patch fail with
KubeConflict if anyone changed the Deployment since it was read.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from remediator.connectors.kubernetes.client import KubeClient, PatchType, Ref
from remediator.connectors.kubernetes.concurrency import apply_with_reread
from remediator.connectors.kubernetes.errors import ActionRefused
from remediator.connectors.kubernetes.revisions import (
    POD_TEMPLATE_HASH,
    REVISION,
    former_revisions,
    owned_replica_sets,
    revision_of,
    template_without_hash,
)

__all__ = [
    "RESTARTED_AT",
    "RolloutRestartResult",
    "RolloutUndoResult",
    "rollout_restart",
    "rollout_undo",
]

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"

# Deployment annotations kubectl keeps from the Deployment instead of copying them
# from the ReplicaSet (rollback.go: annotationsToSkip).
_ANNOTATIONS_TO_SKIP = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        REVISION,
        "deployment.kubernetes.io/revision-history",
        "deployment.kubernetes.io/desired-replicas",
        "deployment.kubernetes.io/max-replicas",
        "deprecated.deployment.rollback.to",
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class RolloutUndoResult:
    namespace: str
    deployment: str
    from_revision: int | None  # the Deployment's revision before the undo
    to_revision: int  # the revision whose template was restored (its number now)
    requested_revision: int | None  # the number asked for (a former one after a rollback)
    known_as: tuple[int, ...]  # every number the restored template has had, oldest first
    # The number the controller gives the restored ReplicaSet (highest + 1), as kubectl.
    expected_revision: int
    replica_set: str  # the restored ReplicaSet
    template_hash: str | None  # its pod-template-hash
    from_template_hash: str | None  # pod-template-hash of the ReplicaSet it replaces
    images: tuple[str, ...]  # container images of the restored template
    resource_version: str  # the Deployment's, after the patch (unchanged on dry run)
    dry_run: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class RolloutRestartResult:
    namespace: str
    deployment: str
    restarted_at: str  # the kubectl.kubernetes.io/restartedAt value written
    annotations: Mapping[str, str]  # every pod-template annotation written
    revision: int | None  # the Deployment's revision before the restart
    resource_version: str
    dry_run: bool


async def rollout_undo(
    kube: KubeClient,
    *,
    namespace: str,
    deployment: str,
    to_revision: int | None = None,
    allowed_revisions: Collection[int] | None = None,
    dry_run: bool,
) -> RolloutUndoResult:
    """Restore the pod template of ``to_revision`` (previous when None).

    Raises ActionRefused (nothing changed) when the revision does not exist, is the
    current one, is not in ``allowed_revisions`` ("not known-good"), or when the
    Deployment is paused; KubeConflict when the Deployment's spec or metadata changed
    concurrently (status-only writes by controllers are re-read and re-decided, see
    :mod:`concurrency`).
    """
    ref = Ref("Deployment", namespace, deployment)
    if to_revision is not None and to_revision <= 0:
        raise ActionRefused(
            f"revision must be positive, got {to_revision}", target=str(ref), reason="bad-revision"
        )
    return await apply_with_reread(
        kube,
        ref,
        lambda obj: _undo(
            kube, ref, obj, to_revision=to_revision, allowed=allowed_revisions, dry_run=dry_run
        ),
    )


async def _undo(
    kube: KubeClient,
    ref: Ref,
    obj: dict[str, Any],
    *,
    to_revision: int | None,
    allowed: Collection[int] | None,
    dry_run: bool,
) -> RolloutUndoResult:
    by_revision = _by_revision(await owned_replica_sets(kube, obj))
    live_template = template_without_hash(obj["spec"]["template"])
    # The ReplicaSet running the Deployment's template decides what "current" is, as
    # in kubectl: the Deployment's revision annotation can lag behind a new
    # ReplicaSet for a moment.
    current_rs = next(
        (
            rs
            for _, rs in sorted(by_revision.items(), reverse=True)
            if template_without_hash(rs["spec"]["template"]) == live_template
        ),
        None,
    )
    current = revision_of(current_rs) if current_rs else revision_of(obj)
    if not by_revision:
        raise ActionRefused("no rollout history found", target=str(ref), reason="no-history")
    latest = max(by_revision)
    if to_revision is None:
        older = sorted(by_revision)[:-1]
        if not older:
            raise ActionRefused(
                f"no previous revision to roll back to (only revision {latest})",
                target=str(ref),
                reason="no-history",
            )
        target_revision = older[-1]
    else:
        target_revision = to_revision
    target_rs = by_revision.get(target_revision) or _formerly(by_revision, target_revision)
    if target_rs is None:
        known = ", ".join(_numbers(rs) for _, rs in sorted(by_revision.items()))
        raise ActionRefused(
            f"unable to find specified revision {target_revision} in history (known: {known})",
            target=str(ref),
            reason="revision-not-found",
        )
    names = _names_of(target_rs)
    if allowed is not None and not set(names) & set(allowed):
        raise ActionRefused(
            f"revision {target_revision} is not known-good (allowed: {sorted(allowed)})",
            target=str(ref),
            reason="not-known-good",
        )
    target_revision = revision_of(target_rs) or target_revision
    if (obj.get("spec") or {}).get("paused"):
        raise ActionRefused(
            "you cannot rollback a paused deployment; resume it first",
            target=str(ref),
            reason="paused",
        )
    template = template_without_hash(target_rs["spec"]["template"])
    if template == live_template:
        raise ActionRefused(
            f"revision {target_revision} is already the current template",
            target=str(ref),
            reason="already-current",
        )

    annotations = {
        k: v
        for k, v in (obj["metadata"].get("annotations") or {}).items()
        if k in _ANNOTATIONS_TO_SKIP
    }
    annotations.update(
        {
            k: v
            for k, v in (target_rs["metadata"].get("annotations") or {}).items()
            if k not in _ANNOTATIONS_TO_SKIP
        }
    )
    # "add" replaces an existing member and also works when annotations are absent.
    patched = await kube.patch(
        ref,
        [
            {"op": "replace", "path": "/spec/template", "value": template},
            {"op": "add", "path": "/metadata/annotations", "value": annotations},
        ],
        patch_type=PatchType.JSON,
        resource_version=obj["metadata"]["resourceVersion"],
        dry_run=dry_run,
    )
    return RolloutUndoResult(
        namespace=ref.namespace,
        deployment=str(ref.name),
        from_revision=current,
        to_revision=target_revision,
        requested_revision=to_revision,
        known_as=names,
        expected_revision=latest + 1,
        replica_set=target_rs["metadata"]["name"],
        template_hash=_hash_of(target_rs),
        from_template_hash=_hash_of(current_rs) if current_rs else None,
        images=tuple(c.get("image", "") for c in template["spec"].get("containers") or []),
        resource_version=patched["metadata"]["resourceVersion"],
        dry_run=dry_run,
    )


async def rollout_restart(
    kube: KubeClient,
    *,
    namespace: str,
    deployment: str,
    dry_run: bool,
    annotations: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> RolloutRestartResult:
    """kubectl's restart: stamp ``kubectl.kubernetes.io/restartedAt`` on the pod template.

    ``annotations`` are extra pod-template annotations written in the same patch (e.g.
    a hash of restored configuration, so new pods show which data they started with).
    """
    ref = Ref("Deployment", namespace, deployment)
    return await apply_with_reread(
        kube, ref, lambda obj: _restart(kube, ref, obj, annotations, now, dry_run=dry_run)
    )


async def _restart(
    kube: KubeClient,
    ref: Ref,
    obj: dict[str, Any],
    annotations: Mapping[str, str] | None,
    now: datetime | None,
    *,
    dry_run: bool,
) -> RolloutRestartResult:
    if (obj.get("spec") or {}).get("paused"):
        raise ActionRefused(
            "can't restart paused deployment (run rollout resume first)",
            target=str(ref),
            reason="paused",
        )
    # kubectl writes time.Now().Format(time.RFC3339).
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    written = {**(annotations or {}), RESTARTED_AT: stamp}
    patched = await kube.patch(
        ref,
        {"spec": {"template": {"metadata": {"annotations": written}}}},
        patch_type=PatchType.STRATEGIC,
        resource_version=obj["metadata"]["resourceVersion"],
        dry_run=dry_run,
    )
    return RolloutRestartResult(
        namespace=ref.namespace,
        deployment=str(ref.name),
        restarted_at=stamp,
        annotations=written,
        revision=revision_of(obj),
        resource_version=patched["metadata"]["resourceVersion"],
        dry_run=dry_run,
    )


def _by_revision(replica_sets: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    result: dict[int, dict[str, Any]] = {}
    for rs in replica_sets:
        revision = revision_of(rs)
        if revision is not None:
            result[revision] = rs
    return result


def _formerly(by_revision: Mapping[int, dict[str, Any]], number: int) -> dict[str, Any] | None:
    """The ReplicaSet that was revision ``number`` before a rollback renumbered it."""
    return next((rs for rs in by_revision.values() if number in former_revisions(rs)), None)


def _names_of(rs: Mapping[str, Any]) -> tuple[int, ...]:
    current = revision_of(rs)
    return (*former_revisions(rs), *((current,) if current is not None else ()))


def _numbers(rs: Mapping[str, Any]) -> str:
    """``3 (was 1)``: a template's current number and the ones it had before."""
    former = former_revisions(rs)
    suffix = f" (was {', '.join(map(str, former))})" if former else ""
    return f"{revision_of(rs)}{suffix}"


def _hash_of(rs: Mapping[str, Any]) -> str | None:
    labels = ((rs.get("metadata") or {}).get("labels")) or {}
    value = labels.get(POD_TEMPLATE_HASH)
    return str(value) if value is not None else None
