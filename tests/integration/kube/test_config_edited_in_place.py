"""A ConfigMap edited in place (no new deploy) does not fail the restore plan.

Before, ``export_config`` refused ("snapshot exists with different data") because the
snapshot of the live revision, taken at its deploy, held other data than the edited
ConfigMap: the whole restore plan failed with it. Snapshots are now keyed by content.
Real Deployments, ConfigMaps and deploy-event snapshots on the kube peer; the steps are
the ones the rules plan for ``restore_config``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from remediator.connectors.kubernetes.client import KubeClient, Ref
from remediator.connectors.kubernetes.configmaps import (
    SNAPSHOT_ORIGIN,
    restore_configmaps,
    snapshot_name,
)
from remediator.connectors.kubernetes.steps import KubernetesStepRunner
from remediator.domain.rules import RulePack, load_rule_pack
from remediator.domain.signals import Signal, Source, Status
from remediator.domain.steps import (
    ExportConfigParams,
    ExportConfigStep,
    RestoreConfigParams,
    RestoreConfigStep,
)
from remediator.rulefiles import read_rule_files
from tests.integration.kube.conftest import (
    create_and_roll_out,
    deployment,
    eventually,
    patch_as_admin,
)
from tests.integration.kube.test_executor_race import REVISION, RULES

pytestmark = pytest.mark.integration

POD_SPEC = {
    "volumes": [{"name": "cfg", "configMap": {"name": "web-config"}}],
    "containers": [{"name": "app", "image": "example/web:1",
                    "volumeMounts": [{"name": "cfg", "mountPath": "/etc/web"}]}],
}  # fmt: skip


def config_pack(ns: str) -> RulePack:
    files = {k: v for k, v in read_rule_files(RULES).items() if not k.endswith("catalog.yaml")}
    files["catalog.yaml"] = (
        f"services:\n  web:\n    namespace: {ns}\n    workload: web\n"
        "    rollback: {strategy: rolling}\n    config: {configmaps: [web-config]}\n"
    )
    return load_rule_pack(files)


def deploy_event(ns: str, revision: int) -> Signal:
    now = datetime.now(UTC)
    return Signal(
        key=f"deploy-{uuid.uuid4().hex}", source=Source.KAFKA, kind="deployment.succeeded",
        status=Status.EVENT, service="web", namespace=ns,
        labels={"service": "web", "namespace": ns, "revision": str(revision)},
        annotations={}, starts_at=now, ends_at=None, received_at=now,
    )  # fmt: skip


async def set_data(kc: KubeClient, ns: str, data: dict[str, str]) -> None:
    ref = Ref("ConfigMap", ns, "web-config")
    live = await kc.get(ref)
    await kc.replace(ref, {**live, "data": data},
                     resource_version=live["metadata"]["resourceVersion"], dry_run=False)  # fmt: skip


async def test_restore_plan_runs_after_an_in_place_edit(kc: KubeClient, ns: str) -> None:
    runner = KubernetesStepRunner(kube=kc, pack=config_pack(ns), poll_seconds=0.2)
    v1, v2, broken = {"mode": "v1"}, {"mode": "v2"}, {"mode": "broken"}
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web-config"}}
    await kc.create(Ref("ConfigMap", ns, "web-config"), {**body, "data": v1}, dry_run=False)
    await create_and_roll_out(kc, ns, deployment("web", "example/web:1", pod_spec=POD_SPEC))
    await runner.after_deploy(deploy_event(ns, 1))
    # Release 2: new config and a new revision.
    await set_data(kc, ns, v2)
    dep = Ref("Deployment", ns, "web")
    await patch_as_admin(
        kc, dep, {"spec": {"template": {"metadata": {"annotations": {"release": "2"}}}}}
    )
    await eventually(lambda: kc.get(dep),
                     lambda d: d["metadata"]["annotations"].get(REVISION) == "2",
                     what="revision 2")  # fmt: skip
    await runner.after_deploy(deploy_event(ns, 2))
    # Then someone edits the ConfigMap in place: no deploy, no new revision.
    await set_data(kc, ns, broken)

    context: dict[str, Any] = {}
    export = ExportConfigStep(
        params=ExportConfigParams(namespace=ns, configmap="web-config"), reason="test"
    )
    exported = await runner.run(export, service="web", dry_run=False, context=context)
    kept = snapshot_name("web-config", 2, {"data": broken})
    assert exported["created"] == [kept]
    kept_cm = await kc.get(Ref("ConfigMap", ns, kept))
    assert kept_cm["data"] == broken and kept_cm["metadata"]["labels"][SNAPSHOT_ORIGIN] == "export"
    # The deploy's snapshot of revision 2 is untouched.
    deployed = await kc.get(Ref("ConfigMap", ns, snapshot_name("web-config", 2, {"data": v2})))
    assert deployed["data"] == v2

    restore = RestoreConfigStep(
        params=RestoreConfigParams(namespace=ns, configmap="web-config", to="previous"),
        reason="test",
    )
    restored = await runner.run(restore, service="web", dry_run=False, context=context)
    assert restored["revision"] == 1 and restored["restored"] == ["web-config"]
    assert (await kc.get(Ref("ConfigMap", ns, "web-config")))["data"] == v1

    # Revision 2 now has two snapshots; a restore to it takes the deploy's (v2), not
    # the copy of the in-place edit.
    again = await restore_configmaps(kc, namespace=ns, deployment="web", revision=2, dry_run=True)
    assert again.snapshots == (snapshot_name("web-config", 2, {"data": v2}),)
