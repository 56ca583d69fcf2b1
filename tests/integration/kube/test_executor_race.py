"""Two executors (two replicas) racing on one service's plan: exactly one action.

Both share one journal and the real cluster; each has its own Lease holder name.
The journal's claim and the per-service Lease together make one of them act.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from remediator.connectors.kubernetes.client import KubeClient, Ref
from remediator.connectors.kubernetes.steps import KubernetesStepRunner, LeaseLock
from remediator.domain.lifecycle import RemediationStatus
from remediator.domain.rules import load_rule_pack, signal_from_cloudevent
from remediator.engine.decider import DecisionEngine, UnknownFacts
from remediator.engine.executor import Executor
from remediator.journal.sqlite import SqliteJournal
from remediator.rulefiles import read_rule_files
from tests.integration.kube.conftest import (
    NOT_READY_LABEL,
    create_and_roll_out,
    deployment,
    eventually,
    patch_as_admin,
)
from tests.unit.engine.test_decider import journal_alerts
from tests.unit.payloads import alert

pytestmark = pytest.mark.integration
RULES = Path(__file__).resolve().parents[3] / "rules"
REVISION = "deployment.kubernetes.io/revision"


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[SqliteJournal]:
    j = SqliteJournal(path=tmp_path / "journal.db")
    await j.open()
    yield j
    await j.close()


def deploy_event(n: int, ns: str, at: datetime) -> dict[str, Any]:
    return {
        "specversion": "1.0", "id": f"{ns}-deploy-{n}", "source": "ci", "time": at.isoformat(),
        "type": "io.remediator.deployment.succeeded",
        "data": {"service": "checkout", "namespace": ns, "revision": str(n), "version": f"v{n}"},
    }  # fmt: skip


async def test_two_executors_racing_on_one_service_act_once(
    kc: KubeClient, ns: str, journal: SqliteJournal
) -> None:
    files = {k: v for k, v in read_rule_files(RULES).items() if not k.endswith("catalog.yaml")}
    files["catalog.yaml"] = (
        f"services:\n  checkout:\n    namespace: {ns}\n    workload: checkout\n"
        "    rollback: {strategy: rolling}\n"
    )
    pack = load_rule_pack(files)
    ref = Ref("Deployment", ns, "checkout")
    await create_and_roll_out(kc, ns, deployment("checkout", "app:v1"))
    bad = {"spec": {"template": {"metadata": {"labels": {NOT_READY_LABEL: "true"}},
                                 "spec": {"containers": [{"name": "app", "image": "app:v2"}]}}}}  # fmt: skip
    await patch_as_admin(kc, ref, bad)
    await eventually(lambda: kc.get(ref),
                     lambda d: d["metadata"]["annotations"].get(REVISION) == "2", what="rev 2")  # fmt: skip

    now = datetime.now(UTC)
    await journal.record_signals([
        signal_from_cloudevent(deploy_event(1, ns, now - timedelta(hours=1)), received_at=now),
        signal_from_cloudevent(deploy_event(2, ns, now - timedelta(minutes=2)), received_at=now),
    ])  # fmt: skip
    await journal_alerts(journal, [alert(name="PodNotReady", namespace=ns, fingerprint="race",
                                         starts_at=now.isoformat())])  # fmt: skip
    await DecisionEngine(journal=journal, pack=pack, facts=UnknownFacts(), dry_run=False).run_once()
    [planned] = (await journal.list_remediations(status=RemediationStatus.PLANNED)).items

    def replica(name: str) -> Executor:
        return Executor(
            journal=journal,
            runner=KubernetesStepRunner(kube=kc, pack=pack, rollout_timeout_seconds=60,
                                        poll_seconds=0.25),
            instance_id=name,
            lock=LeaseLock(kube=kc, holder=name, duration_seconds=120),
        )  # fmt: skip

    await asyncio.gather(
        replica("replica-a").run_until_idle(), replica("replica-b").run_until_idle()
    )

    item = await journal.get_remediation(planned.id)
    assert item is not None
    assert item.status is RemediationStatus.SUCCEEDED, item
    assert item.claimed_by in ("replica-a", "replica-b")
    assert [s.kind for s in item.steps or ()].count("rollout_undo") == 1
    final = await kc.get(ref)
    assert final["metadata"]["annotations"][REVISION] == "3"  # one undo, not two
    replica_sets = await kc.list_all(Ref("ReplicaSet", ns))
    assert sorted(rs["metadata"]["annotations"][REVISION] for rs in replica_sets) == ["2", "3"]
    # The Lease was released when the plan ended.
    lease = await kc.get(Ref("Lease", ns, "remediator-checkout"))
    assert not (lease.get("spec") or {}).get("holderIdentity")


async def test_a_held_lease_is_renewed_and_keeps_others_out(kc: KubeClient, ns: str) -> None:
    holder = LeaseLock(kube=kc, holder="replica-a", duration_seconds=2)
    other = LeaseLock(kube=kc, holder="replica-b", duration_seconds=2)
    assert await holder.acquire(service="checkout", namespace=ns)
    first = (await kc.get(Ref("Lease", ns, "remediator-checkout")))["spec"]["renewTime"]
    await asyncio.sleep(4.5)  # two durations: without renewal it would have expired
    assert not await other.acquire(service="checkout", namespace=ns)
    renewed = (await kc.get(Ref("Lease", ns, "remediator-checkout")))["spec"]["renewTime"]
    assert renewed > first
    await holder.release(service="checkout", namespace=ns)
    assert await other.acquire(service="checkout", namespace=ns)
    await other.release(service="checkout", namespace=ns)
