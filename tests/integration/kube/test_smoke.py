"""The catalog's smoke test as a real Job on the kube peer (kwok plays the nodes: it
completes a Job's pod unless the pod carries ``remediator.test/not-ready``, which it
leaves running, so the Job's own deadline fails it).

A passing Job passes the step with its outcome as evidence; a failing one ends the
plan ``needs_human``, never ``succeeded``, with the Job's outcome and the evidence the
plan gathered on the way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from remediator.connectors.kubernetes.client import KubeClient, Ref
from remediator.connectors.kubernetes.smoke import PURPOSE_LABEL
from remediator.connectors.kubernetes.steps import KubernetesStepRunner
from remediator.domain.lifecycle import RemediationStatus
from remediator.domain.record_build import record_from_journal
from remediator.domain.rules import RulePack, load_rule_pack, signal_from_cloudevent
from remediator.domain.steps import VerifySmokeParams, VerifySmokeStep
from remediator.engine.decider import DecisionEngine, UnknownFacts
from remediator.engine.executor import Executor
from remediator.journal.sqlite import SqliteJournal
from remediator.ports import NeedsHuman
from remediator.rulefiles import read_rule_files
from tests.integration.kube.conftest import (
    NOT_READY_LABEL,
    Kubectl,
    create_and_roll_out,
    deployment,
    patch_as_admin,
)
from tests.integration.kube.test_executor_race import REVISION, RULES, deploy_event
from tests.polling import eventually
from tests.unit.engine.test_decider import journal_alerts
from tests.unit.payloads import alert

pytestmark = pytest.mark.integration

PASSING = "smoke_test: {image: example/checkout-smoke:1, command: [bin/smoke], timeout: 60s}"
# kwok never finishes this pod: the Job's activeDeadlineSeconds (2 s) fails it.
FAILING = (
    "smoke_test: {image: example/checkout-smoke:1, command: [bin/smoke], timeout: 2s, "
    f'labels: {{"{NOT_READY_LABEL}": "true"}}}}'
)


def pack_with_smoke(ns: str, smoke: str) -> RulePack:
    """The shipped rules with checkout, the only service, in ``ns`` with ``smoke``."""
    files = {k: v for k, v in read_rule_files(RULES).items() if not k.endswith("catalog.yaml")}
    files["catalog.yaml"] = (
        f"services:\n  checkout:\n    namespace: {ns}\n    workload: checkout\n"
        f"    rollback: {{strategy: rolling}}\n    {smoke}\n"
    )
    return load_rule_pack(files)


def smoke_step(ns: str) -> VerifySmokeStep:
    return VerifySmokeStep(
        params=VerifySmokeParams(namespace=ns, service="checkout"), reason="test"
    )


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[SqliteJournal]:
    opened = SqliteJournal(path=tmp_path / "journal.db")
    await opened.open()
    yield opened
    await opened.close()


def smoke_jobs(kubectl: Kubectl, ns: str) -> list[dict[str, Any]]:
    found = kubectl.json("get", "jobs", "-n", ns, "-l", f"{PURPOSE_LABEL}=smoke-test")
    return list(found["items"])


async def test_a_completing_smoke_job_passes_with_its_outcome_as_evidence(
    kc: KubeClient, kubectl: Kubectl, ns: str
) -> None:
    runner = KubernetesStepRunner(kube=kc, pack=pack_with_smoke(ns, PASSING), poll_seconds=0.2)
    detail = await runner.run(smoke_step(ns), service="checkout", dry_run=False, context={})
    assert (detail["check"], detail["result"], detail["outcome"]) == ("smoke", "passed", "Complete")
    assert detail["image"] == "example/checkout-smoke:1"
    assert detail["summary"] == f"smoke test Job {ns}/{detail['job']} completed"
    [job] = smoke_jobs(kubectl, ns)
    assert job["metadata"]["name"] == detail["job"]
    assert job["spec"]["backoffLimit"] == 0  # one attempt: a failure is the answer
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert (container["image"], container["command"]) == ("example/checkout-smoke:1", ["bin/smoke"])


async def test_a_failing_smoke_job_needs_a_human_with_its_outcome_as_evidence(
    kc: KubeClient, kubectl: Kubectl, ns: str
) -> None:
    runner = KubernetesStepRunner(kube=kc, pack=pack_with_smoke(ns, FAILING), poll_seconds=0.2)
    with pytest.raises(NeedsHuman) as failed:
        await runner.run(smoke_step(ns), service="checkout", dry_run=False, context={})
    evidence = failed.value.detail
    assert (evidence["check"], evidence["result"], evidence["outcome"]) == (
        "smoke", "failed", "Failed"
    )  # fmt: skip
    assert f"the smoke test Job {ns}/{evidence['job']} failed: DeadlineExceeded" in str(
        failed.value
    )
    [job] = smoke_jobs(kubectl, ns)
    assert job["metadata"]["name"] == evidence["job"]  # kept for people to read


async def test_a_rollback_whose_smoke_test_fails_ends_needs_human(
    kc: KubeClient, ns: str, journal: SqliteJournal
) -> None:
    """The whole plan on kwok: the undo lands, the rollout completes, the smoke Job
    fails; the plan ends needs_human with the Job's outcome and the workload's events."""
    pack = pack_with_smoke(ns, FAILING)
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
    await journal_alerts(journal, [alert(name="PodNotReady", namespace=ns, fingerprint="smoke",
                                         starts_at=(now - timedelta(minutes=1)).isoformat())])  # fmt: skip
    await DecisionEngine(journal=journal, pack=pack, facts=UnknownFacts(), dry_run=False).run_once()
    [planned] = (await journal.list_remediations(status=RemediationStatus.PLANNED)).items

    runner = KubernetesStepRunner(kube=kc, pack=pack, rollout_timeout_seconds=60,
                                  poll_seconds=0.2)  # fmt: skip
    await Executor(journal=journal, runner=runner, instance_id="replica-a").run_until_idle()

    item = await journal.get_remediation(planned.id)
    assert item is not None
    assert item.status == "needs_human", item.reason
    assert item.reason is not None and "verify_smoke: the smoke test Job" in item.reason
    steps = {s.kind: s for s in item.steps or ()}
    assert steps["rollout_undo"].status == "succeeded"
    assert steps["wait_rollout"].status == "succeeded"
    failed = steps["verify_smoke"]
    assert (failed.status, failed.detail["outcome"]) == ("failed", "Failed")
    assert "record_evidence" not in steps  # gathered with the failed step instead
    events = failed.detail["evidence"]["events"]
    assert isinstance(events, list) and events, failed.detail["evidence"]
    assert all(e["name"].startswith("checkout") for e in events)
    final = await kc.get(ref)
    assert final["metadata"]["annotations"][REVISION] == "3"  # the undo landed, once

    record = record_from_journal(item, await journal.get_signal(item.signal_id))
    assert record.results.function.status.value == "failed"
    assert record.evidence.note == f"recorded when step {failed.idx + 1} (verify_smoke) failed"
    assert record.evidence.events
