"""rollout_undo / rollout_status against the real control plane, side by side with kubectl."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from remediator.connectors.kubernetes.client import KubeClient, PatchType, Ref
from remediator.connectors.kubernetes.errors import ActionRefused, KubeConflict
from remediator.connectors.kubernetes.rollout import rollout_undo
from remediator.connectors.kubernetes.status import rollout_status, wait_for_rollout
from tests.integration.kube.conftest import (
    NOT_READY_LABEL,
    Kubectl,
    create_and_roll_out,
    deployment,
    eventually,
    patch_as_admin,
)

pytestmark = pytest.mark.integration

REVISION = "deployment.kubernetes.io/revision"


async def release_bad_v2(kc: KubeClient, ns: str, name: str) -> None:
    await patch_as_admin(
        kc,
        Ref("Deployment", ns, name),
        {
            "spec": {
                "template": {
                    "metadata": {"labels": {NOT_READY_LABEL: "true"}},
                    "spec": {"containers": [{"name": "app", "image": f"example/{name}:2"}]},
                }
            }
        },
    )


async def history(kc: KubeClient, ns: str, name: str) -> dict[str, dict[str, Any]]:
    """image -> (revision, revision-history, replicas) of each ReplicaSet of ``name``."""
    items = await kc.list_all(Ref("ReplicaSet", ns), label_selector=f"app={name}")
    return {
        rs["spec"]["template"]["spec"]["containers"][0]["image"].split(":")[1]: {
            "revision": rs["metadata"]["annotations"][REVISION],
            "history": rs["metadata"]["annotations"].get(
                "deployment.kubernetes.io/revision-history"
            ),
            "replicas": rs["spec"]["replicas"],
        }
        for rs in items
    }


async def test_undo_bad_release_like_kubectl(kc: KubeClient, kubectl: Kubectl, ns: str) -> None:
    # "web" is ours, "twin" gets the same treatment from kubectl itself.
    for name in ("web", "twin"):
        await create_and_roll_out(
            kc, ns, deployment(name, f"example/{name}:1", progress_deadline=4)
        )
        await release_bad_v2(kc, ns, name)

    failed = await wait_for_rollout(
        kc, namespace=ns, deployment="web", timeout_seconds=60, poll_seconds=0.5
    )
    assert failed.state == "failed", failed
    assert failed.reason == "ProgressDeadlineExceeded"
    assert failed.revision == 2
    assert failed.available_replicas == 2  # the old pods keep serving

    ref = Ref("Deployment", ns, "web")
    before = await kc.get(ref)
    dry = await rollout_undo(kc, namespace=ns, deployment="web", dry_run=True)
    after_dry = await kc.get(ref)
    assert after_dry["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after_dry["spec"] == before["spec"]
    assert (dry.from_revision, dry.to_revision, dry.expected_revision) == (2, 1, 3)

    result = await rollout_undo(
        kc, namespace=ns, deployment="web", to_revision=1, allowed_revisions={1}, dry_run=False
    )
    kubectl.run("rollout", "undo", "deployment/twin", "-n", ns, "--to-revision=1")
    assert result.from_revision == 2
    assert result.to_revision == 1
    assert result.expected_revision == 3
    assert result.images == ("example/web:1",)
    assert result.template_hash and result.from_template_hash
    assert result.template_hash != result.from_template_hash
    assert result.resource_version != before["metadata"]["resourceVersion"]

    done = await wait_for_rollout(
        kc, namespace=ns, deployment="web", timeout_seconds=60, poll_seconds=0.5
    )
    assert done.state == "complete", done
    assert done.revision == 3
    await eventually(
        lambda: rollout_status(kc, namespace=ns, deployment="twin"),
        lambda s: s.complete,
        what="kubectl's undo of twin",
    )

    # Revision history reads as kubectl leaves it: the restored ReplicaSet got the
    # new highest number (3) and remembers its old one; revision 1 is gone.
    ours = await history(kc, ns, "web")
    theirs = await history(kc, ns, "twin")
    assert ours == theirs
    assert ours == {
        "1": {"revision": "3", "history": "1", "replicas": 2},
        "2": {"revision": "2", "history": None, "replicas": 0},
    }
    web, twin = await kc.get(ref), await kc.get(Ref("Deployment", ns, "twin"))
    assert web["metadata"]["annotations"] == twin["metadata"]["annotations"]
    assert web["spec"]["template"]["metadata"] == {"labels": {"app": "web"}}
    rs_v1 = [
        rs
        for rs in await kc.list_all(Ref("ReplicaSet", ns), label_selector="app=web")
        if rs["metadata"]["annotations"][REVISION] == "3"
    ]
    assert rs_v1[0]["metadata"]["name"] == result.replica_set
    # kubectl's own view of the history agrees.
    out = kubectl.run("rollout", "history", "deployment/web", "-n", ns)
    assert [line.split()[0] for line in out.splitlines()[2:] if line.strip()] == ["2", "3"]


async def test_undo_refusals_change_nothing(kc: KubeClient, ns: str) -> None:
    ref = Ref("Deployment", ns, "api")
    await kc.create(ref, deployment("api", "example/api:1"), dry_run=False)

    async def revisions() -> list[str]:
        items = await kc.list_all(Ref("ReplicaSet", ns), label_selector="app=api")
        return sorted(rs["metadata"]["annotations"].get(REVISION, "") for rs in items)

    await eventually(revisions, lambda r: r == ["1"], what="first ReplicaSet")
    with pytest.raises(ActionRefused) as only_one:
        await rollout_undo(kc, namespace=ns, deployment="api", dry_run=False)
    assert only_one.value.reason == "no-history"

    await release_bad_v2(kc, ns, "api")
    await eventually(revisions, lambda r: r == ["1", "2"], what="second ReplicaSet")
    before = await kc.get(ref)

    cases = [
        ({"to_revision": 7}, "revision-not-found"),
        ({"to_revision": 1, "allowed_revisions": {2}}, "not-known-good"),
        ({"allowed_revisions": ()}, "not-known-good"),
        ({"to_revision": 2}, "already-current"),
    ]
    for kwargs, reason in cases:
        with pytest.raises(ActionRefused) as refused:
            await rollout_undo(kc, namespace=ns, deployment="api", dry_run=False, **kwargs)
        assert refused.value.reason == reason, (kwargs, str(refused.value))
        assert "Deployment" in str(refused.value) and "api" in str(refused.value)

    paused = await patch_as_admin(kc, ref, {"spec": {"paused": True}}, patch_type=PatchType.MERGE)
    with pytest.raises(ActionRefused) as refused:
        await rollout_undo(kc, namespace=ns, deployment="api", to_revision=1, dry_run=False)
    assert refused.value.reason == "paused"
    after = await kc.get(ref)
    assert after["metadata"]["generation"] == paused["metadata"]["generation"]
    assert after["spec"]["template"] == before["spec"]["template"]

    # A stale resourceVersion is a conflict: re-read and decide again.
    with pytest.raises(KubeConflict):
        await kc.patch(
            ref,
            {"spec": {"paused": False}},
            patch_type=PatchType.MERGE,
            resource_version=before["metadata"]["resourceVersion"],
            dry_run=False,
        )


async def test_wait_for_rollout_times_out_with_injected_clock(kc: KubeClient, ns: str) -> None:
    ref = Ref("Deployment", ns, "slow")
    await kc.create(
        ref, deployment("slow", "example/slow:1", labels={NOT_READY_LABEL: "true"}), dry_run=False
    )
    now = [0.0]
    sleeps: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds
        await asyncio.sleep(0)

    status = await wait_for_rollout(
        kc,
        namespace=ns,
        deployment="slow",
        timeout_seconds=5,
        poll_seconds=2,
        clock=lambda: now[0],
        sleep=fake_sleep,
    )
    assert status.state == "progressing"
    assert sleeps == [2, 2, 1]
