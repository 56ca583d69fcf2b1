"""Two rollbacks in a row to the same known-good revision.

After a rollback the deployment controller gives the restored pod template a new
number (revision 1 comes back as 3, as with ``kubectl rollout undo``), but deploy
history still knows the healthy release as revision 1. The second rollback to it used
to be refused as "revision not found"; the revision is now matched by the pod template
that had the number. Real Deployments and ReplicaSets on the kube peer, the steps the
rules plan for a rolling rollback, run by the step runner.
"""

from __future__ import annotations

from typing import Any

import pytest

from remediator.connectors.kubernetes.client import KubeClient, Ref
from remediator.connectors.kubernetes.errors import ActionRefused
from remediator.connectors.kubernetes.rollout import rollout_undo
from remediator.connectors.kubernetes.steps import KubernetesStepRunner
from remediator.domain.steps import (
    RolloutUndoParams,
    RolloutUndoStep,
    WaitRolloutParams,
    WaitRolloutStep,
)
from tests.integration.kube.conftest import (
    create_and_roll_out,
    deployment,
    eventually,
    patch_as_admin,
)
from tests.integration.kube.test_executor_lease import pack_in
from tests.integration.kube.test_rollout import REVISION, history

pytestmark = pytest.mark.integration


async def release(kc: KubeClient, ns: str, version: str) -> None:
    spec = {"containers": [{"name": "app", "image": f"example/checkout:{version}"}]}
    await patch_as_admin(
        kc, Ref("Deployment", ns, "checkout"), {"spec": {"template": {"spec": spec}}}
    )


async def at_revision(kc: KubeClient, ns: str, revision: int) -> dict[str, Any]:
    return await eventually(
        lambda: kc.get(Ref("Deployment", ns, "checkout")),
        lambda d: d["metadata"]["annotations"].get(REVISION) == str(revision),
        what=f"revision {revision}",
    )


async def roll_back(runner: KubernetesStepRunner, ns: str, *, frm: int, to: int) -> dict[str, Any]:
    context: dict[str, Any] = {}
    undo = RolloutUndoStep(
        params=RolloutUndoParams(
            namespace=ns, deployment="checkout", from_revision=frm, to_revision=to
        ),
        reason="revision 1 is the newest revision recorded healthy",
    )
    done = await runner.run(undo, service="checkout", dry_run=False, context=context)
    wait = WaitRolloutStep(params=WaitRolloutParams(namespace=ns, deployment="checkout"),
                           reason="test")  # fmt: skip
    await runner.run(wait, service="checkout", dry_run=False, context=context)
    return done


def image(obj: dict[str, Any]) -> str:
    return str(obj["spec"]["template"]["spec"]["containers"][0]["image"])


async def test_second_rollback_to_the_known_good_revision(kc: KubeClient, ns: str) -> None:
    runner = KubernetesStepRunner(
        kube=kc, pack=pack_in(ns), rollout_timeout_seconds=60, poll_seconds=0.2
    )
    await create_and_roll_out(kc, ns, deployment("checkout", "example/checkout:v1"))  # rev 1
    await release(kc, ns, "v2")
    await at_revision(kc, ns, 2)

    first = await roll_back(runner, ns, frm=2, to=1)
    assert (first["to_revision"], first["requested_revision"]) == (1, 1)
    after_first = await at_revision(kc, ns, 3)  # v1's template, renumbered
    assert image(after_first) == "example/checkout:v1"
    assert (await history(kc, ns, "checkout"))["v1"]["history"] == "1"

    await release(kc, ns, "v3")  # the next bad release
    await at_revision(kc, ns, 4)

    # Deploy history still names the healthy release "revision 1".
    second = await roll_back(runner, ns, frm=4, to=1)
    assert (second["requested_revision"], second["to_revision"]) == (1, 3)
    assert second["known_as"] == [1, 3]
    assert second["template_hash"] == first["template_hash"]  # the same pod template
    after_second = await at_revision(kc, ns, 5)
    assert image(after_second) == "example/checkout:v1"
    assert (await history(kc, ns, "checkout"))["v1"]["history"] == "1,3"


async def test_a_former_number_is_still_checked_against_the_known_good_ones(
    kc: KubeClient, ns: str
) -> None:
    await create_and_roll_out(kc, ns, deployment("checkout", "example/checkout:v1"))
    await release(kc, ns, "v2")
    await at_revision(kc, ns, 2)
    await rollout_undo(kc, namespace=ns, deployment="checkout", to_revision=1, dry_run=False)
    await at_revision(kc, ns, 3)
    await release(kc, ns, "v3")
    before = await at_revision(kc, ns, 4)

    # Revision 2 (v2) was never recorded healthy: only 1 (now 3) is allowed.
    with pytest.raises(ActionRefused) as refused:
        await rollout_undo(kc, namespace=ns, deployment="checkout", to_revision=2,
                           allowed_revisions={1}, dry_run=False)  # fmt: skip
    assert refused.value.reason == "not-known-good"
    with pytest.raises(ActionRefused) as missing:
        await rollout_undo(kc, namespace=ns, deployment="checkout", to_revision=9,
                           allowed_revisions={9}, dry_run=False)  # fmt: skip
    assert missing.value.reason == "revision-not-found"
    assert "3 (was 1)" in str(missing.value)
    # The current number of the known-good template is as good as its former one.
    dry = await rollout_undo(kc, namespace=ns, deployment="checkout", to_revision=3,
                             allowed_revisions={1}, dry_run=True)  # fmt: skip
    assert dry.known_as == (1, 3)
    assert (await kc.get(Ref("Deployment", ns, "checkout")))["spec"] == before["spec"]
