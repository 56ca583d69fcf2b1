"""The decision engine honours each service's automation level, over the real SQLite
journal and the shipped rules with checkout's level set in the catalog."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from remediator.domain.lifecycle import RemediationStatus
from remediator.domain.rules import RulePack, load_rule_pack
from remediator.engine.decider import DecisionEngine
from remediator.journal.sqlite import SqliteJournal
from remediator.rulefiles import read_rule_files
from tests.unit.engine.test_decider import NOW, Clock, FakeFacts, cpu, drain, journal_alerts
from tests.unit.journal_helpers import outbox_messages

RULES = Path(__file__).resolve().parents[3] / "rules"


def shipped_with_checkout_at(level: str) -> RulePack:
    files = read_rule_files(RULES)
    name = next(name for name in files if name.endswith("catalog.yaml"))
    catalog = files[name]
    anchor = "    workload: checkout                 # the Deployment serving the service\n"
    assert anchor in catalog
    files[name] = catalog.replace(anchor, anchor + f"    automation: {level}\n", 1)
    pack = load_rule_pack(files)
    assert pack.automation("checkout").value == level
    return pack


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[SqliteJournal]:
    j = SqliteJournal(path=tmp_path / "journal.db")
    await j.open()
    yield j
    await j.close()


async def decide_one_cpu_alert(journal: SqliteJournal, level: str) -> DecisionEngine:
    # No deploy recorded: CPUSaturation scales checkout up from 3 replicas.
    engine = DecisionEngine(
        journal=journal,
        pack=shipped_with_checkout_at(level),
        facts=FakeFacts({"checkout": (3, None)}),
        dry_run=False,
        clock=Clock(NOW),
        notice_channels=("slack",),
    )
    await journal_alerts(journal, [cpu(1)])
    assert await drain(engine) == 1
    return engine


async def test_notify_records_what_would_have_run_and_tells_people(
    journal: SqliteJournal,
) -> None:
    await decide_one_cpu_alert(journal, "notify")
    [rem] = (await journal.list_remediations(limit=10)).items
    assert (rem.status, rem.reason) == (RemediationStatus.SKIPPED, "automation_notify")
    assert await journal.runnable_remediations(limit=10) == []  # nothing will run
    full = await journal.get_remediation(rem.id)
    assert full is not None and full.decision is not None
    assert [step["kind"] for step in full.decision["plan"]["steps"]] == [
        "scale_deployment",
        "wait_rollout",
        "verify_health",
        "verify_condition",
        "record_evidence",
        "notify",
    ]
    assert "would have run:" in full.explanation
    notices = await outbox_messages(journal, "slack", limit=10)
    assert [n.message.payload for n in notices] == [{"remediation_id": rem.id, "stage": "skipped"}]
    outcomes = await journal.service_outcomes(since=NOW - timedelta(days=30), until=NOW)
    assert outcomes == {}  # created at NOW: the window is [since, until)
    outcomes = await journal.service_outcomes(since=NOW, until=NOW + timedelta(seconds=1))
    assert (outcomes["checkout"].plans, outcomes["checkout"].would_have_run) == (0, 1)


async def test_approve_makes_the_plan_wait_for_the_services_approvers(
    journal: SqliteJournal,
) -> None:
    await decide_one_cpu_alert(journal, "approve")
    [rem] = (await journal.list_remediations(limit=10)).items
    assert rem.status is RemediationStatus.AWAITING_APPROVAL
    assert await journal.runnable_remediations(limit=10) == []
    full = await journal.get_remediation(rem.id)
    assert full is not None
    plan = full.plan()
    assert (plan.require_approval, plan.approvers) == (True, ("tech-lead",))
    notices = await outbox_messages(journal, "slack", limit=10)
    # People hear of the waiting plan (its notice shows the status, awaiting approval).
    assert [n.message.payload["remediation_id"] for n in notices] == [rem.id]


async def test_auto_plans_to_run(journal: SqliteJournal) -> None:
    await decide_one_cpu_alert(journal, "auto")
    [rem] = (await journal.list_remediations(limit=10)).items
    assert rem.status is RemediationStatus.PLANNED
    assert [r.id for r in await journal.runnable_remediations(limit=10)] == [rem.id]
