"""The step runner refuses, before touching the cluster, a step outside the catalog.

Defence in depth: the decision engine never plans one, but a plan is read back from the
journal, and a journal is not a trust boundary. Real Deployments on the kube peer.
"""

from __future__ import annotations

from typing import Any

import pytest

from remediator.connectors.kubernetes.client import KubeClient, Ref
from remediator.connectors.kubernetes.errors import ActionRefused
from remediator.connectors.kubernetes.steps import KubernetesStepRunner
from remediator.domain.plans import Step
from remediator.domain.steps import RolloutUndoParams, RolloutUndoStep
from remediator.rulefiles import load_rule_pack_from_path
from tests.integration.kube.conftest import create_and_roll_out, deployment, eventually
from tests.integration.kube.test_executor_lease import pack_in
from tests.integration.kube.test_executor_race import REVISION, RULES
from tests.integration.kube.test_rollout import release_bad_v2

pytestmark = pytest.mark.integration


def undo(namespace: str) -> Step:
    return RolloutUndoStep(
        params=RolloutUndoParams(
            namespace=namespace, deployment="checkout", from_revision=2, to_revision=1
        ),
        reason="test",
    )


async def test_a_step_outside_the_catalog_is_refused_and_changes_nothing(
    kc: KubeClient, ns: str
) -> None:
    await create_and_roll_out(kc, ns, deployment("checkout", "example/checkout:1"))
    await release_bad_v2(kc, ns, "checkout")
    ref = Ref("Deployment", ns, "checkout")
    before = await eventually(
        lambda: kc.get(ref), lambda d: d["metadata"]["annotations"].get(REVISION) == "2",
        what="revision 2",
    )  # fmt: skip
    context: dict[str, Any] = {}

    # The shipped catalog places checkout in "shop", not in this namespace.
    shipped = KubernetesStepRunner(kube=kc, pack=load_rule_pack_from_path(RULES))
    with pytest.raises(ActionRefused) as wrong_namespace:
        await shipped.run(undo(ns), service="checkout", dry_run=False, context=context)
    assert wrong_namespace.value.reason == "not-in-catalog"
    assert f"namespace {ns!r} is not where the catalog places 'checkout'" in str(
        wrong_namespace.value
    )
    # A service the catalog does not hold at all.
    with pytest.raises(ActionRefused, match="service 'cart' is not in the catalog"):
        await shipped.run(undo(ns), service="cart", dry_run=False, context=context)

    # The controller may still write status (resourceVersion moves); the spec may not.
    after = await kc.get(ref)
    assert after["spec"] == before["spec"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["metadata"]["annotations"][REVISION] == "2"

    # In scope, the same step goes through (a dry run: nothing changes either way).
    in_scope = KubernetesStepRunner(kube=kc, pack=pack_in(ns))
    result = await in_scope.run(undo(ns), service="checkout", dry_run=True, context=context)
    assert (result["from_revision"], result["to_revision"]) == (2, 1)
