"""ConfigMap snapshots and restore + restart: new pods carry the restored data's hash."""

from __future__ import annotations

from typing import Any

import pytest

from remediator.connectors.kubernetes.client import KubeClient, Ref
from remediator.connectors.kubernetes.configmaps import (
    CONFIG_HASH,
    SnapshotOrigin,
    config_hash,
    restore_configmaps,
    snapshot_configmaps,
    snapshot_name,
)
from remediator.connectors.kubernetes.errors import ActionRefused
from remediator.connectors.kubernetes.rollout import RESTARTED_AT
from remediator.connectors.kubernetes.status import wait_for_rollout
from tests.integration.kube.conftest import create_and_roll_out, deployment

pytestmark = pytest.mark.integration


def configmap(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


POD_SPEC = {
    "volumes": [{"name": "cfg", "configMap": {"name": "web-config"}}],
    "containers": [
        {
            "name": "app",
            "image": "example/web:1",
            "volumeMounts": [{"name": "cfg", "mountPath": "/etc/web"}],
            "envFrom": [{"configMapRef": {"name": "web-env"}}],
            "env": [
                {
                    "name": "FLAG",
                    "valueFrom": {
                        "configMapKeyRef": {"name": "flags", "key": "x", "optional": True}
                    },
                }
            ],
        }
    ],
}


async def names(kc: KubeClient, ns: str) -> set[str]:
    return {cm["metadata"]["name"] for cm in await kc.list_all(Ref("ConfigMap", ns))}


async def test_snapshot_restore_restart(kc: KubeClient, ns: str) -> None:
    good_config = {"greeting": "hello", "level": "info"}
    good_env = {"MODE": "a"}
    await kc.create(
        Ref("ConfigMap", ns, "web-config"), configmap("web-config", good_config), dry_run=False
    )
    await kc.create(Ref("ConfigMap", ns, "web-env"), configmap("web-env", good_env), dry_run=False)
    await create_and_roll_out(kc, ns, deployment("web", "example/web:1", pod_spec=POD_SPEC))
    existing = await names(kc, ns)

    config_rev1 = snapshot_name("web-config", 1, {"data": good_config})
    env_rev1 = snapshot_name("web-env", 1, {"data": good_env})
    dry = await snapshot_configmaps(kc, namespace=ns, deployment="web", revision=1, dry_run=True)
    assert dry.created == (config_rev1, env_rev1)
    assert config_rev1.startswith("web-config-rev-1-") and len(config_rev1) == 27
    assert await names(kc, ns) == existing

    snap = await snapshot_configmaps(kc, namespace=ns, deployment="web", revision=1, dry_run=False)
    assert snap.snapshots == (("web-config", config_rev1), ("web-env", env_rev1))
    assert snap.skipped == ("flags",)  # optional and absent
    copy = await kc.get(Ref("ConfigMap", ns, config_rev1))
    assert copy["immutable"] is True
    assert copy["data"] == good_config
    assert copy["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "remediator",
        "remediator.io/snapshot-of": "web-config",
        "remediator.io/revision": "1",
        "remediator.io/deployment": "web",
        "remediator.io/snapshot-origin": "deploy",
    }
    again = await snapshot_configmaps(kc, namespace=ns, deployment="web", revision=1, dry_run=False)
    assert again.created == ()  # idempotent

    # A bad in-place config change (a key changed, one added): no new revision.
    live_ref = Ref("ConfigMap", ns, "web-config")
    live = await kc.get(live_ref)
    broken = {"greeting": "broken", "level": "info", "extra": "x"}
    await kc.replace(
        live_ref,
        {**live, "data": broken},
        resource_version=live["metadata"]["resourceVersion"],
        dry_run=False,
    )
    # Its own snapshot, next to the one taken at the deploy (which stays as it was).
    edited = await snapshot_configmaps(
        kc, namespace=ns, deployment="web", revision=1, dry_run=False, origin=SnapshotOrigin.EXPORT
    )
    assert edited.created == (snapshot_name("web-config", 1, {"data": broken}),)
    assert (await kc.get(Ref("ConfigMap", ns, config_rev1)))["data"] == good_config

    dep_ref = Ref("Deployment", ns, "web")
    before = {"cm": await kc.get(live_ref), "dep": await kc.get(dep_ref)}
    dry_restore = await restore_configmaps(
        kc, namespace=ns, deployment="web", revision=1, dry_run=True
    )
    assert dry_restore.restored == ("web-config",)
    assert (await kc.get(live_ref))["metadata"]["resourceVersion"] == before["cm"]["metadata"][
        "resourceVersion"
    ]
    dep_after_dry = await kc.get(dep_ref)
    assert dep_after_dry["spec"] == before["dep"]["spec"]

    restored = await restore_configmaps(
        kc, namespace=ns, deployment="web", revision=1, dry_run=False
    )
    assert restored.restored == ("web-config",)
    assert restored.snapshots == (config_rev1, env_rev1)  # the deploy's, not the edit's
    assert restored.unchanged == ("web-env",)
    assert restored.skipped == ("flags",)
    assert (await kc.get(live_ref))["data"] == good_config  # "extra" is gone too
    expected_hash = config_hash(
        {"web-config": {"data": good_config}, "web-env": {"data": good_env}}
    )
    assert restored.config_hash == expected_hash

    status = await wait_for_rollout(
        kc, namespace=ns, deployment="web", timeout_seconds=60, poll_seconds=0.5
    )
    assert status.complete, status
    assert status.revision == 2  # a restart is a new template, hence a new revision
    pods = await kc.list_all(Ref("Pod", ns), label_selector="app=web")
    live_pods = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    assert len(live_pods) == 2
    for pod in live_pods:
        annotations = pod["metadata"]["annotations"]
        assert annotations[CONFIG_HASH] == expected_hash
        assert annotations[RESTARTED_AT] == restored.restart.restarted_at

    with pytest.raises(ActionRefused) as missing:
        await restore_configmaps(kc, namespace=ns, deployment="web", revision=9, dry_run=False)
    assert missing.value.reason == "snapshot-missing"
