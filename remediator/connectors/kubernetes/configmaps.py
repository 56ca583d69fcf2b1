"""ConfigMap snapshots per Deployment revision, and restoring them.

A Deployment rollback restores the pod template but not the data of ConfigMaps it
mounts; an in-place ConfigMap edit is not even a new revision. So at a known-good
revision ``n`` the ConfigMaps the pod template references (volumes, projected
volumes, ``envFrom``, ``env[].valueFrom``) are copied to immutable
``<name>-rev-<n>-<hash>`` ConfigMaps, labelled with the source, the Deployment and the
revision. Restoring writes that data back onto the live
ConfigMaps (PUT with their resourceVersion, so keys added since are removed too) and
then restarts the Deployment like ``kubectl rollout restart``, adding the restored
data's hash to the pod template so new pods show which data they started with.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from remediator.connectors.kubernetes.client import KubeClient, Ref
from remediator.connectors.kubernetes.errors import ActionRefused, KubeConflict, KubeNotFound
from remediator.connectors.kubernetes.rollout import RolloutRestartResult, rollout_restart
from remediator.domain.retention import RetentionPolicy, Verdict, judge

__all__ = [
    "CONFIG_HASH",
    "CONFIG_REVISION",
    "SNAPSHOT_ORIGIN",
    "ConfigMapRestore",
    "ConfigMapSnapshot",
    "SnapshotOrigin",
    "SnapshotRetention",
    "config_hash",
    "prune_config_snapshots",
    "referenced_configmaps",
    "restore_configmaps",
    "revision_snapshots",
    "snapshot_configmaps",
    "snapshot_name",
]

MANAGED_BY = "app.kubernetes.io/managed-by"
SNAPSHOT_OF = "remediator.io/snapshot-of"
SNAPSHOT_REVISION = "remediator.io/revision"
SNAPSHOT_DEPLOYMENT = "remediator.io/deployment"
SNAPSHOT_ORIGIN = "remediator.io/snapshot-origin"
CONFIG_HASH = "remediator.io/config-hash"
CONFIG_REVISION = "remediator.io/config-revision"
_PAYLOAD_KEYS = ("data", "binaryData")


class SnapshotOrigin(StrEnum):
    DEPLOY = "deploy"  # the revision's deploy event: the data it was released with
    EXPORT = "export"  # an export_config step, just before a remediation changed it


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigMapSnapshot:
    namespace: str
    deployment: str
    revision: int
    # (source ConfigMap, snapshot ConfigMap) for each referenced ConfigMap
    snapshots: tuple[tuple[str, str], ...]
    created: tuple[str, ...]  # snapshots created now (others already existed, identical)
    skipped: tuple[str, ...]  # optional references whose ConfigMap does not exist
    dry_run: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfigMapRestore:
    namespace: str
    deployment: str
    revision: int
    restored: tuple[str, ...]  # live ConfigMaps whose data was changed (or re-created)
    unchanged: tuple[str, ...]  # already equal to the snapshot
    skipped: tuple[str, ...]  # optional references without a snapshot (left alone)
    config_hash: str  # hash of the restored data, also written to the pod template
    snapshots: tuple[str, ...]  # the snapshot ConfigMaps the data came from
    restart: RolloutRestartResult
    dry_run: bool


def snapshot_name(configmap: str, revision: int, payload: Mapping[str, Any]) -> str:
    """``<configmap>-rev-<n>-<hash of the data>``.

    Keyed by content, not by revision alone: a ConfigMap edited in place is not a new
    revision, yet its data differs from the snapshot taken at the deploy. Each distinct
    content of a revision gets its own immutable snapshot, so taking one never fails
    over an in-place edit and never overwrites the record of what the revision was
    deployed with. (Superseding the old snapshot instead would lose exactly the data a
    restore may need.) Which one a restore uses is :func:`restore_configmaps`'s choice.
    """
    return f"{configmap}-rev-{revision}-{_payload_digest(payload)}"


def _payload_digest(payload: Mapping[str, Any]) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def referenced_configmaps(template: Mapping[str, Any]) -> dict[str, bool]:
    """ConfigMap name -> optional, for every ConfigMap a pod template references.

    A ConfigMap referenced both optionally and not is required.
    """
    found: dict[str, bool] = {}
    for name, optional in _references(template.get("spec") or {}):
        found[name] = found.get(name, True) and optional
    return found


def _references(pod_spec: Mapping[str, Any]) -> Iterator[tuple[str, bool]]:
    for volume in pod_spec.get("volumes") or []:
        if "configMap" in volume:
            cm = volume["configMap"]
            yield cm["name"], bool(cm.get("optional"))
        for source in (volume.get("projected") or {}).get("sources") or []:
            if "configMap" in source:
                cm = source["configMap"]
                yield cm["name"], bool(cm.get("optional"))
    containers = [
        *(pod_spec.get("initContainers") or []),
        *(pod_spec.get("containers") or []),
        *(pod_spec.get("ephemeralContainers") or []),
    ]
    for container in containers:
        for env_from in container.get("envFrom") or []:
            if "configMapRef" in env_from:
                ref = env_from["configMapRef"]
                yield ref["name"], bool(ref.get("optional"))
        for env in container.get("env") or []:
            key_ref = (env.get("valueFrom") or {}).get("configMapKeyRef")
            if key_ref:
                yield key_ref["name"], bool(key_ref.get("optional"))


def _payload(cm: Mapping[str, Any]) -> dict[str, Any]:
    return {k: dict(cm[k]) for k in _PAYLOAD_KEYS if cm.get(k)}


def config_hash(payloads: Mapping[str, Mapping[str, Any]]) -> str:
    """A stable hash of ConfigMap name -> {data, binaryData}; 16 hex digits."""
    canonical = json.dumps(payloads, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


async def snapshot_configmaps(
    kube: KubeClient,
    *,
    namespace: str,
    deployment: str,
    revision: int,
    dry_run: bool,
    origin: SnapshotOrigin = SnapshotOrigin.DEPLOY,
) -> ConfigMapSnapshot:
    """Copy every ConfigMap the Deployment's pod template references to a snapshot.

    Idempotent: the same data at the same revision is the same snapshot (kept). Data
    edited in place since gets a snapshot of its own (:func:`snapshot_name`). A
    snapshot of that name with other data can only be a hash collision or tampering,
    and is refused.
    """
    template = (await kube.get(Ref("Deployment", namespace, deployment)))["spec"]["template"]
    snapshots: list[tuple[str, str]] = []
    created: list[str] = []
    skipped: list[str] = []
    for name, optional in sorted(referenced_configmaps(template).items()):
        ref = Ref("ConfigMap", namespace, name)
        try:
            live = await kube.get(ref)
        except KubeNotFound:
            if optional:
                skipped.append(name)
                continue
            raise
        payload = _payload(live)
        target = ref.named(snapshot_name(name, revision, payload))
        try:
            existing = await kube.get(target)
        except KubeNotFound:
            existing = None
        if existing is not None:
            if _payload(existing) != payload:
                raise ActionRefused(
                    f"snapshot exists with other data than its name's hash says ({name})",
                    target=str(target),
                    reason="snapshot-differs",
                )
        else:
            body = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": target.name,
                    "labels": {
                        MANAGED_BY: "remediator",
                        SNAPSHOT_OF: name,
                        SNAPSHOT_REVISION: str(revision),
                        SNAPSHOT_DEPLOYMENT: deployment,
                        SNAPSHOT_ORIGIN: origin.value,
                    },
                },
                "immutable": True,
                **payload,
            }
            await kube.create(target, body, dry_run=dry_run)
            created.append(str(target.name))
        snapshots.append((name, str(target.name)))
    return ConfigMapSnapshot(
        namespace=namespace,
        deployment=deployment,
        revision=revision,
        snapshots=tuple(snapshots),
        created=tuple(created),
        skipped=tuple(skipped),
        dry_run=dry_run,
    )


async def revision_snapshots(
    kube: KubeClient, *, namespace: str, deployment: str, revision: int
) -> dict[str, dict[str, Any]]:
    """Source ConfigMap -> the snapshot a restore of ``revision`` uses.

    A revision may have several snapshots of one ConfigMap (edited in place while it
    ran). The oldest is used: it was taken when the revision's deploy event arrived,
    the data the revision was released and known good with. Others are taken by
    ``export_config`` just before a remediation changes the config, usually while
    things are failing: they are kept for people to undo a restore, not restored to.
    Found by label, so snapshots named before content keys (``<name>-rev-<n>``, no
    origin label: taken on deploy) count.
    """
    selector = f"{SNAPSHOT_DEPLOYMENT}={deployment},{SNAPSHOT_REVISION}={revision}"
    found = await kube.list_all(Ref("ConfigMap", namespace), label_selector=selector)
    chosen: dict[str, dict[str, Any]] = {}
    for cm in sorted(found, key=_age_order):
        source = (cm["metadata"].get("labels") or {}).get(SNAPSHOT_OF)
        if source and source not in chosen:
            chosen[source] = cm
    return chosen


def _age_order(cm: Mapping[str, Any]) -> tuple[bool, str, str]:
    # Deploy snapshots first; then RFC 3339 UTC timestamps ("...Z", whole seconds),
    # which sort as strings; the name breaks ties.
    meta = cm["metadata"]
    origin = (meta.get("labels") or {}).get(SNAPSHOT_ORIGIN, SnapshotOrigin.DEPLOY.value)
    return (
        origin != SnapshotOrigin.DEPLOY.value,
        str(meta.get("creationTimestamp") or ""),
        str(meta["name"]),
    )


async def restore_configmaps(
    kube: KubeClient, *, namespace: str, deployment: str, revision: int, dry_run: bool
) -> ConfigMapRestore:
    """Write revision ``n``'s snapshots back onto the live ConfigMaps, then restart.

    Every snapshot is read before anything is written: a missing snapshot refuses the
    whole restore with nothing changed. The restart always happens (also when the data
    was already equal), so re-running after a crash between the writes and the restart
    still leaves pods running the restored data.
    """
    template = (await kube.get(Ref("Deployment", namespace, deployment)))["spec"]["template"]
    references = referenced_configmaps(template)
    taken = await revision_snapshots(
        kube, namespace=namespace, deployment=deployment, revision=revision
    )
    snapshots: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []
    for name, optional in sorted(references.items()):
        if name in taken:
            snapshots[name] = taken[name]
        elif optional:
            # snapshot_configmaps skips optional references that did not exist.
            skipped.append(name)
        else:
            raise ActionRefused(
                f"no snapshot of ConfigMap {name} for revision {revision}",
                target=f"ConfigMap {namespace}/{name}-rev-{revision}-*",
                reason="snapshot-missing",
            )
    names = sorted(snapshots)
    if not snapshots:
        raise ActionRefused(
            "pod template references no ConfigMaps",
            target=str(Ref("Deployment", namespace, deployment)),
            reason="no-configmaps",
        )

    restored: list[str] = []
    unchanged: list[str] = []
    for name in names:
        payload = _payload(snapshots[name])
        ref = Ref("ConfigMap", namespace, name)
        try:
            live = await kube.get(ref)
        except KubeNotFound:
            body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}
            await kube.create(ref, {**body, **payload}, dry_run=dry_run)
            restored.append(name)
            continue
        if _payload(live) == payload:
            unchanged.append(name)
            continue
        body = {k: v for k, v in live.items() if k not in _PAYLOAD_KEYS}
        await kube.replace(
            ref,
            {**body, **payload},
            resource_version=live["metadata"]["resourceVersion"],
            dry_run=dry_run,
        )
        restored.append(name)

    digest = config_hash({name: _payload(snapshots[name]) for name in names})
    restart = await rollout_restart(
        kube,
        namespace=namespace,
        deployment=deployment,
        dry_run=dry_run,
        annotations={CONFIG_HASH: digest, CONFIG_REVISION: str(revision)},
    )
    return ConfigMapRestore(
        namespace=namespace,
        deployment=deployment,
        revision=revision,
        restored=tuple(restored),
        unchanged=tuple(unchanged),
        skipped=tuple(skipped),
        config_hash=digest,
        snapshots=tuple(snapshots[name]["metadata"]["name"] for name in names),
        restart=restart,
        dry_run=dry_run,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotRetention:
    """What retention does to one Deployment's snapshots, by revision, newest first."""

    namespace: str
    deployment: str
    revisions: tuple[tuple[int, Verdict, tuple[str, ...]], ...]  # revision, verdict, names
    deleted: tuple[str, ...]  # snapshot ConfigMaps deleted (none on dry run)
    dry_run: bool


async def prune_config_snapshots(
    kube: KubeClient,
    *,
    namespace: str,
    deployment: str,
    policy: RetentionPolicy,
    now: datetime,
    in_use: Collection[int],
    dry_run: bool,
) -> SnapshotRetention:
    """Delete the snapshots of revisions retention does not keep.

    A revision's snapshots are kept or pruned together (a restore needs all of them),
    its age the newest of theirs. Each delete carries the resourceVersion it was
    judged on; one changed or gone meanwhile is left for the next run.
    """
    found = await kube.list_all(
        Ref("ConfigMap", namespace), label_selector=f"{SNAPSHOT_DEPLOYMENT}={deployment}"
    )
    by_revision: dict[int, list[dict[str, Any]]] = {}
    for cm in found:
        revision = (cm["metadata"].get("labels") or {}).get(SNAPSHOT_REVISION, "")
        if revision.isdigit():
            by_revision.setdefault(int(revision), []).append(cm)
    judged = judge(
        (
            (str(rev), max(_created(cm) for cm in by_revision[rev]))
            for rev in sorted(by_revision, reverse=True)
        ),
        policy=policy,
        now=now,
        in_use={str(rev) for rev in in_use},
    )
    deleted: list[str] = []
    revisions: list[tuple[int, Verdict, tuple[str, ...]]] = []
    for item in judged:
        cms = by_revision[int(item.key)]
        revisions.append((int(item.key), item.verdict, tuple(sorted(_name(cm) for cm in cms))))
        if item.verdict.kept or dry_run:
            continue
        for cm in cms:
            try:
                await kube.delete(_ref_of(namespace, cm), resource_version=_rv(cm), dry_run=False)
            except (KubeNotFound, KubeConflict):
                continue
            deleted.append(_name(cm))
    return SnapshotRetention(namespace=namespace, deployment=deployment,
                             revisions=tuple(revisions), deleted=tuple(sorted(deleted)),
                             dry_run=dry_run)  # fmt: skip


def _ref_of(namespace: str, cm: Mapping[str, Any]) -> Ref:
    return Ref("ConfigMap", namespace, _name(cm))


def _name(cm: Mapping[str, Any]) -> str:
    return str(cm["metadata"]["name"])


def _rv(cm: Mapping[str, Any]) -> str:
    return str(cm["metadata"]["resourceVersion"])


def _created(cm: Mapping[str, Any]) -> datetime:
    return datetime.fromisoformat(str(cm["metadata"]["creationTimestamp"]).replace("Z", "+00:00"))
