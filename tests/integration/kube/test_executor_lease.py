"""The executor against a Lease another replica holds, or takes over mid-plan.

Real Leases on the kube peer, real LeaseLocks on both sides. The executor's clock
is a fake one the test advances pass by pass (as the polling loop would), so the
backoff is checked exactly without waiting for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from remediator.connectors.kubernetes.client import KubeClient, Ref
from remediator.connectors.kubernetes.lease import ServiceLease
from remediator.connectors.kubernetes.steps import KubernetesStepRunner, LeaseLock
from remediator.domain.lifecycle import RemediationStatus
from remediator.domain.plans import StepKind
from remediator.domain.rules import RulePack, load_rule_pack, signal_from_cloudevent
from remediator.engine.decider import DecisionEngine, UnknownFacts
from remediator.engine.executor import Executor
from remediator.journal.sqlite import SqliteJournal
from remediator.rulefiles import load_rule_pack_from_path, read_rule_files
from tests.integration.kube.conftest import (
    NOT_READY_LABEL,
    create_and_roll_out,
    deployment,
    patch_as_admin,
)
from tests.integration.kube.test_executor_race import REVISION, RULES, deploy_event
from tests.polling import eventually
from tests.unit.engine.test_decider import Clock, journal_alerts
from tests.unit.engine.test_executor import GatedRunner, planned_rollback
from tests.unit.payloads import alert

pytestmark = pytest.mark.integration
LEASE = "remediator-checkout"


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[SqliteJournal]:
    j = SqliteJournal(path=tmp_path / "journal.db")
    await j.open()
    yield j
    await j.close()


async def drive(ex: Executor, clock: Clock, *, seconds: float, tick: float = 0.5) -> None:
    """The executor's polling loop, one pass per ``tick`` of its (fake) clock."""
    for _ in range(round(seconds / tick)):
        await ex.start_runnable()
        await asyncio.gather(*list(ex._tasks))
        clock.now += timedelta(seconds=tick)


def pack_in(ns: str) -> RulePack:
    """The shipped rules with checkout, the only service, catalogued in ``ns``."""
    files = {k: v for k, v in read_rule_files(RULES).items() if not k.endswith("catalog.yaml")}
    files["catalog.yaml"] = (
        f"services:\n  checkout:\n    namespace: {ns}\n    workload: checkout\n"
        "    rollback: {strategy: rolling}\n"
    )
    return load_rule_pack(files)


async def broken_rollout_plan(kc: KubeClient, ns: str, journal: SqliteJournal) -> str:
    """checkout rolled out v1, then v2 whose pods never get ready: a rollback plan."""
    pack = pack_in(ns)
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
    await journal_alerts(journal, [alert(name="PodNotReady", namespace=ns, fingerprint="held",
                                         starts_at=now.isoformat())])  # fmt: skip
    await DecisionEngine(journal=journal, pack=pack, facts=UnknownFacts(), dry_run=False).run_once()
    [planned] = (await journal.list_remediations(status=RemediationStatus.PLANNED)).items
    return planned.id


async def test_a_held_lease_is_asked_for_once_per_backoff_period_then_the_plan_runs_once(
    kc: KubeClient, ns: str, journal: SqliteJournal
) -> None:
    rid = await broken_rollout_plan(kc, ns, journal)
    other = LeaseLock(kube=kc, holder="replica-b", duration_seconds=120)
    assert await other.acquire(service="checkout", namespace=ns)

    clock = Clock(datetime.now(UTC))
    attempts: list[str] = []
    # The pack the plan was decided with: the runner refuses a namespace its catalog lacks.
    pack = pack_in(ns)
    ex = Executor(
        journal=journal,
        runner=KubernetesStepRunner(kube=kc, pack=pack, rollout_timeout_seconds=60,
                                    poll_seconds=0.25),
        instance_id="replica-a",
        lock=LeaseLock(kube=kc, holder="replica-a", duration_seconds=120),
        clock=clock,
        rand=lambda: 1.0,
        lock_retry_base_seconds=2,
        lock_retry_max_seconds=60,
        on_lock_attempt=attempts.append,
    )  # fmt: skip
    # 240 passes over two fake minutes: asked at 0, 2, 6, 14, 30 and 62 s, no more.
    await drive(ex, clock, seconds=120)
    assert attempts == ["held_elsewhere"] * 6
    item = await journal.get_remediation(rid)
    assert item is not None and (item.status, item.claimed_at) == ("planned", None)
    lease = await kc.get(Ref("Lease", ns, LEASE))
    assert lease["spec"]["holderIdentity"] == "replica-b"

    await other.release(service="checkout", namespace=ns)
    await drive(ex, clock, seconds=1.5)  # 120 to 121.5 s: free now, but the wait is not over
    assert attempts == ["held_elsewhere"] * 6
    await drive(ex, clock, seconds=30)  # at 122 s it asks again, takes it, runs the plan
    assert attempts == ["held_elsewhere"] * 6 + ["acquired"]

    item = await journal.get_remediation(rid)
    assert item is not None
    assert (item.status, item.claimed_by) == ("succeeded", "replica-a"), item
    assert [s.kind for s in item.steps or ()].count("rollout_undo") == 1
    final = await kc.get(Ref("Deployment", ns, "checkout"))
    assert final["metadata"]["annotations"][REVISION] == "3"  # one undo
    lease = await kc.get(Ref("Lease", ns, LEASE))
    assert not lease["spec"].get("holderIdentity")  # released when the plan ended


async def test_a_lease_taken_over_mid_plan_stops_it_before_the_next_step(
    kc: KubeClient, ns: str, journal: SqliteJournal
) -> None:
    pack = load_rule_pack_from_path(RULES)
    rid = await planned_rollback(journal, pack)  # steps: undo, wait, verify, notify
    lost: list[str] = []
    lock = LeaseLock(kube=kc, holder="replica-a", duration_seconds=120, namespace=ns,
                     renew_every_seconds=0.2)  # fmt: skip
    runner = GatedRunner(StepKind.ROLLOUT_UNDO)
    ex = Executor(journal=journal, runner=runner, instance_id="replica-a", lock=lock,
                  on_lease_lost=lost.append)  # fmt: skip
    await ex.start_runnable()
    await runner.entered.wait()  # the undo is in flight, the Lease ours
    assert lock.held(service="checkout")

    # Another replica, whose clock says our Lease expired long ago, takes it over.
    def an_hour_later() -> datetime:
        return datetime.now(UTC) + timedelta(hours=1)

    thief = ServiceLease(kc, namespace=ns, service="checkout", holder="replica-b",
                         duration_seconds=120, clock=an_hour_later)  # fmt: skip
    await thief.acquire()

    async def still_held() -> bool:
        return lock.held(service="checkout")

    await eventually(still_held, lambda held: not held, timeout=10, what="the loss noticed")
    runner.release.set()
    await asyncio.gather(*list(ex._tasks))

    assert [kind for kind, _ in runner.calls] == [StepKind.ROLLOUT_UNDO]  # nothing after it
    item = await journal.get_remediation(rid)
    assert item is not None
    assert item.status is RemediationStatus.NEEDS_HUMAN
    assert item.reason is not None
    assert "Lease" in item.reason and "(wait_rollout)" in item.reason
    assert [(s.kind, s.status) for s in item.steps or ()] == [("rollout_undo", "succeeded")]
    assert lost == ["checkout"]
    lease = await kc.get(Ref("Lease", ns, LEASE))
    assert lease["spec"]["holderIdentity"] == "replica-b"  # the new holder's Lease stays
