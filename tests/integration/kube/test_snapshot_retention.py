"""Retention of ConfigMap snapshots on the kube peer, by the daemon's retention task.

Snapshots of five revisions; the Deployment runs revision 3. The newest two revisions
are kept for being newest, 3 (live) and 2 (what a restore goes back to) for being in
use, and only revision 1's snapshots are deleted. The task's clock is injected: "now"
is a day after the snapshots were made, past the age limit.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from remediator.connectors.kubernetes.client import KubeClient, Ref
from remediator.connectors.kubernetes.configmaps import (
    restore_configmaps,
    snapshot_configmaps,
    snapshot_name,
)
from remediator.connectors.kubernetes.steps import KubernetesStepRunner
from remediator.domain.retention import RetentionPolicy, Verdict
from remediator.journal.sqlite import SqliteJournal
from remediator.runtime.retention import RetentionTask
from tests.integration.kube.conftest import create_and_roll_out, deployment, patch_as_admin
from tests.integration.kube.test_config_edited_in_place import POD_SPEC, config_pack, set_data
from tests.polling import eventually

pytestmark = pytest.mark.integration

POLICY = RetentionPolicy(keep_newest=2, keep_days=0.5)


async def snapshots_of(kc: KubeClient, ns: str) -> set[str]:
    found = await kc.list_all(Ref("ConfigMap", ns), label_selector="remediator.io/deployment=web")
    return {cm["metadata"]["name"] for cm in found}


async def test_old_revisions_snapshots_go_live_and_previous_stay(
    kc: KubeClient, ns: str, tmp_path: Path
) -> None:
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web-config"}}
    await kc.create(Ref("ConfigMap", ns, "web-config"), {**body, "data": {"v": "1"}},
                    dry_run=False)  # fmt: skip
    await create_and_roll_out(kc, ns, deployment("web", "example/web:1", pod_spec=POD_SPEC))
    dep = Ref("Deployment", ns, "web")
    for release in ("2", "3"):  # the Deployment ends at revision 3
        await patch_as_admin(
            kc, dep, {"spec": {"template": {"metadata": {"annotations": {"release": release}}}}}
        )
        await eventually(
            lambda: kc.get(dep),
            lambda d, release=release: (
                d["metadata"]["annotations"].get("deployment.kubernetes.io/revision") == release
            ),
            what=f"revision {release}",
        )
    names = {}
    for revision in range(1, 6):  # 4 and 5: later revisions (say, rolled back since)
        await set_data(kc, ns, {"v": str(revision)})
        await snapshot_configmaps(kc, namespace=ns, deployment="web", revision=revision,
                                  dry_run=False)  # fmt: skip
        names[revision] = snapshot_name("web-config", revision, {"data": {"v": str(revision)}})
    assert await snapshots_of(kc, ns) == set(names.values())

    runner = KubernetesStepRunner(kube=kc, pack=config_pack(ns))
    journal = SqliteJournal(path=tmp_path / "j.db")
    await journal.open()
    try:
        later = datetime.now(UTC) + timedelta(days=1)

        def task(*, dry_run: bool) -> RetentionTask:
            return RetentionTask(
                journal=journal, pack=config_pack(ns), backup_root=tmp_path,
                backup_policy=POLICY, snapshot_policy=POLICY,
                snapshots=runner, interval_seconds=3600, dry_run=dry_run, clock=lambda: later,
            )  # fmt: skip

        rehearsal = await task(dry_run=True).once()
        [planned] = rehearsal.snapshots
        assert [(rev, verdict) for rev, verdict, _ in planned.revisions] == [
            (5, Verdict.NEWEST), (4, Verdict.NEWEST), (3, Verdict.IN_USE),
            (2, Verdict.IN_USE), (1, Verdict.PRUNE),
        ]  # fmt: skip
        assert planned.deleted == () and await snapshots_of(kc, ns) == set(names.values())

        done = await task(dry_run=False).once()
    finally:
        await journal.close()

    assert done.errors == []
    assert done.snapshots[0].deleted == (names[1],)
    assert await snapshots_of(kc, ns) == {names[r] for r in (2, 3, 4, 5)}
    # What a restore needs is still there.
    restored = await restore_configmaps(kc, namespace=ns, deployment="web", revision=2,
                                        dry_run=True)  # fmt: skip
    assert restored.snapshots == (names[2],)
