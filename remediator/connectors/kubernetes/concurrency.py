"""Optimistic concurrency that tells "a controller wrote status" from "someone changed it".

Every write carries the resourceVersion that was read. But controllers write status
all the time (the deployment controller several times per second during a rollout,
the HPA controller every sync), and each status write moves the resourceVersion too,
so a precondition can fail although nothing our decision was based on changed.

:func:`apply_with_reread` handles exactly that case: on 409 Conflict it re-reads the
object, and only when the new read differs from the old one in status and API or
controller bookkeeping alone does it run the action again on the fresh read (bounded). Any
change to spec, labels, annotations or data is raised as KubeConflict: re-deciding
is then the executor's job, because what changed it (a human, a deploy, another
instance) may have made the action wrong.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from remediator.connectors.kubernetes.client import KubeClient, Ref
from remediator.connectors.kubernetes.errors import KubeConflict

__all__ = ["apply_with_reread", "same_intent"]

T = TypeVar("T")
ATTEMPTS = 5
_BOOKKEEPING = frozenset({"resourceVersion", "managedFields"})
# Annotations controllers maintain themselves: the deployment controller sets the
# revision right after it creates a ReplicaSet for a new template, a moment after the
# (spec) change that caused it.
_CONTROLLER_ANNOTATIONS = frozenset(
    {"deployment.kubernetes.io/revision", "deployment.kubernetes.io/revision-history"}
)


def same_intent(before: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
    """Whether two reads of one object differ only in status and bookkeeping metadata."""
    return _intent(before) == _intent(after)


def _intent(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _BOOKKEEPING}
    annotations = {
        k: v for k, v in (meta.get("annotations") or {}).items() if k not in _CONTROLLER_ANNOTATIONS
    }
    meta["annotations"] = annotations
    # apiVersion/kind: list items come without them; the Ref already fixes both.
    body = {k: v for k, v in obj.items() if k not in ("status", "apiVersion", "kind")}
    return {**body, "metadata": meta}


async def apply_with_reread(
    kube: KubeClient,
    ref: Ref,
    action: Callable[[dict[str, Any]], Awaitable[T]],
    *,
    subresource: str | None = None,
) -> T:
    """Read ``ref`` and run ``action(obj)``; on a status-only conflict, again on a fresh read.

    ``action`` must derive everything it writes from the object it is given (and
    from reads it makes itself), with that object's resourceVersion as precondition.
    """
    obj = await kube.get(ref, subresource=subresource)
    for attempt in range(ATTEMPTS):
        try:
            return await action(obj)
        except KubeConflict:
            fresh = await kube.get(ref, subresource=subresource)
            if attempt == ATTEMPTS - 1 or not same_intent(obj, fresh):
                raise
            obj = fresh
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises
