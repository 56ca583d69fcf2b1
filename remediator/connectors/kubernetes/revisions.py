"""Deployment revision bookkeeping, as the deployment controller and kubectl keep it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from remediator.connectors.kubernetes.client import KubeClient, Ref

__all__ = [
    "POD_TEMPLATE_HASH",
    "REVISION",
    "REVISION_HISTORY",
    "former_revisions",
    "owned_replica_sets",
    "revision_of",
    "template_without_hash",
]

REVISION = "deployment.kubernetes.io/revision"
# The numbers a ReplicaSet had before a rollback renumbered it (comma-separated, oldest
# first), kept by the deployment controller: its pod template came back as a new number.
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
POD_TEMPLATE_HASH = "pod-template-hash"


def revision_of(obj: Mapping[str, Any]) -> int | None:
    """The ``deployment.kubernetes.io/revision`` annotation as an int (None if absent/bad)."""
    value = ((obj.get("metadata") or {}).get("annotations") or {}).get(REVISION)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def former_revisions(obj: Mapping[str, Any]) -> tuple[int, ...]:
    """The revision numbers a ReplicaSet had before its current one (``revision-history``)."""
    value = ((obj.get("metadata") or {}).get("annotations") or {}).get(REVISION_HISTORY) or ""
    return tuple(int(part) for part in value.split(",") if part.strip().isdigit())


def template_without_hash(template: Mapping[str, Any]) -> dict[str, Any]:
    """A deep-enough copy of a pod template minus the ``pod-template-hash`` label."""
    meta = dict(template.get("metadata") or {})
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if k != POD_TEMPLATE_HASH}
    if labels:
        meta["labels"] = labels
    else:
        meta.pop("labels", None)
    return {**template, "metadata": meta}


async def owned_replica_sets(
    kube: KubeClient, deployment: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """The ReplicaSets whose controller is this Deployment (by UID, like kubectl)."""
    meta = deployment["metadata"]
    uid = meta["uid"]
    match_labels = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels")
    # matchLabels narrows the list server-side; ownership by UID is what decides.
    selector = ",".join(f"{k}={v}" for k, v in sorted((match_labels or {}).items())) or None
    items = await kube.list_all(Ref("ReplicaSet", meta["namespace"]), label_selector=selector)
    return [
        rs
        for rs in items
        if any(
            o.get("controller") and o.get("uid") == uid
            for o in (rs.get("metadata") or {}).get("ownerReferences") or []
        )
    ]
