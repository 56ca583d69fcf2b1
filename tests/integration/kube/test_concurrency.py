"""Status-only writes are re-read and re-applied; real changes surface as KubeConflict."""

from __future__ import annotations

from typing import Any

import pytest

from remediator.connectors.kubernetes.client import KubeClient, PatchType, Ref
from remediator.connectors.kubernetes.concurrency import apply_with_reread
from remediator.connectors.kubernetes.errors import KubeConflict

pytestmark = pytest.mark.integration


async def make_route(kc: KubeClient, ns: str) -> Ref:
    ref = Ref("HTTPRoute", ns, "web")
    await kc.create(
        ref,
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "web"},
            "spec": {"rules": [{"backendRefs": [{"name": "web", "port": 80}]}]},
        },
        dry_run=False,
    )
    return ref


async def test_status_write_between_read_and_write_is_reapplied(kc: KubeClient, ns: str) -> None:
    ref = await make_route(kc, ns)
    seen: list[str] = []

    async def action(obj: dict[str, Any]) -> dict[str, Any]:
        seen.append(obj["metadata"]["resourceVersion"])
        if len(seen) == 1:
            # A controller reports status in between (no gateway controller runs
            # here, so this is the only writer).
            await kc.patch(
                ref,
                {"status": {"parents": []}},
                patch_type=PatchType.MERGE,
                resource_version=obj["metadata"]["resourceVersion"],
                dry_run=False,
                subresource="status",
            )
        return await kc.patch(
            ref,
            {"metadata": {"labels": {"touched": "yes"}}},
            patch_type=PatchType.MERGE,
            resource_version=obj["metadata"]["resourceVersion"],
            dry_run=False,
        )

    result = await apply_with_reread(kc, ref, action)
    assert len(seen) == 2 and seen[0] != seen[1]
    assert result["metadata"]["labels"] == {"touched": "yes"}


async def test_spec_change_between_read_and_write_is_a_conflict(kc: KubeClient, ns: str) -> None:
    ref = await make_route(kc, ns)
    calls = 0

    async def action(obj: dict[str, Any]) -> None:
        nonlocal calls
        calls += 1
        # Someone else edits the route after we decided on what we read.
        await kc.patch(
            ref,
            {"spec": {"hostnames": ["shop.example"]}},
            patch_type=PatchType.MERGE,
            resource_version=obj["metadata"]["resourceVersion"],
            dry_run=False,
        )
        await kc.patch(
            ref,
            {"metadata": {"labels": {"touched": "yes"}}},
            patch_type=PatchType.MERGE,
            resource_version=obj["metadata"]["resourceVersion"],
            dry_run=False,
        )

    with pytest.raises(KubeConflict):
        await apply_with_reread(kc, ref, action)
    assert calls == 1
    assert "labels" not in (await kc.get(ref))["metadata"]
