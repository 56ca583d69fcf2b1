"""RemediationStore: listing, reading, approving."""

from __future__ import annotations

from datetime import timedelta

from remediator.domain.lifecycle import RemediationStatus, StepStatus
from remediator.ports import Journal
from tests.contract.builders import NOW, message, plant, running

LATER = NOW + timedelta(minutes=5)


async def test_remediations_page_newest_first_and_filter(journal: Journal) -> None:
    ids = [
        await plant(journal, status=status)
        for status in (
            RemediationStatus.PLANNED,
            RemediationStatus.SKIPPED,
            RemediationStatus.PLANNED,
            RemediationStatus.AWAITING_APPROVAL,
        )
    ]
    other = await plant(journal, signal={"service": "payments"})
    page = await journal.list_remediations(limit=100)
    assert [r.id for r in page.items] == [other, *reversed(ids)]
    assert all(r.decision is None and r.steps is None for r in page.items)
    planned = await journal.list_remediations(status=RemediationStatus.PLANNED)
    assert [r.id for r in planned.items] == [other, ids[2], ids[0]]
    seen, cursor = [], None
    while True:
        part = await journal.list_remediations(service="checkout", limit=3, cursor=cursor)
        seen += [r.id for r in part.items]
        assert len(part.item_cursors) == len(part.items)
        if part.next_cursor is None:
            break
        cursor = part.next_cursor
    assert seen == list(reversed(ids))


async def test_a_remediation_reads_back_with_its_decision_and_steps(journal: Journal) -> None:
    rid = await running(journal)
    await journal.step_started(rid, holder="replica-a", idx=0, kind="rollout_undo", at=NOW)
    await journal.step_finished(
        rid, holder="replica-a", idx=0, status=StepStatus.SUCCEEDED,
        detail={"revision": 3, "note": "ünïcode"}, at=LATER,
    )  # fmt: skip
    await journal.step_started(rid, holder="replica-a", idx=1, kind="wait_rollout", at=LATER)
    found = await journal.get_remediation(rid)
    assert found is not None
    assert found.status is RemediationStatus.RUNNING
    assert found.decision == {"plan": {"action": "rollback", "steps": [{"kind": "rollout_undo"}]}}
    assert found.steps is not None
    assert [(s.idx, s.kind, s.status) for s in found.steps] == [
        (0, "rollout_undo", StepStatus.SUCCEEDED),
        (1, "wait_rollout", StepStatus.STARTED),
    ]
    first, second = found.steps
    assert (first.started_at, first.finished_at) == (NOW, LATER)
    assert first.detail == {"revision": 3, "note": "ünïcode"}
    assert (second.finished_at, second.detail) == (None, {})
    assert await journal.remediation_steps(rid) == list(found.steps)
    assert await journal.get_remediation("rem_nope") is None
    assert await journal.remediation_steps("rem_nope") == []


async def test_approval_makes_a_waiting_plan_runnable_and_records_who(journal: Journal) -> None:
    rid = await plant(journal, status=RemediationStatus.AWAITING_APPROVAL)
    assert await journal.runnable_remediations(limit=10) == []
    assert await journal.approve_remediation(
        rid, by="alice", at=LATER, roles=["sre"], comment="checked", outbox=[message(1)]
    )
    found = await journal.get_remediation(rid)
    assert found is not None
    assert found.status is RemediationStatus.PLANNED
    assert (found.approved_by, found.approved_at, found.approved_as, found.approval_comment) == (
        "alice", LATER, ("sre",), "checked",
    )  # fmt: skip
    assert found.updated_at == LATER
    assert [r.id for r in await journal.runnable_remediations(limit=10)] == [rid]
    assert await journal.outbox_backlog() == {"kafka:remediator.outcomes": 1}


async def test_approval_without_roles_records_none(journal: Journal) -> None:
    rid = await plant(journal, status=RemediationStatus.AWAITING_APPROVAL)
    assert await journal.approve_remediation(rid, by="bob", at=LATER)
    found = await journal.get_remediation(rid)
    assert found is not None
    assert (found.approved_as, found.approval_comment) == (None, None)


async def test_only_a_waiting_plan_can_be_approved(journal: Journal) -> None:
    for status in (
        RemediationStatus.PLANNED,
        RemediationStatus.SKIPPED,
        RemediationStatus.DRY_RUN,
    ):
        rid = await plant(journal, status=status)
        assert not await journal.approve_remediation(rid, by="alice", at=LATER,
                                                     outbox=[message(9)])  # fmt: skip
        found = await journal.get_remediation(rid)
        assert found is not None
        assert (found.status, found.approved_by) == (status, None)
    waiting = await plant(journal, status=RemediationStatus.AWAITING_APPROVAL)
    assert await journal.approve_remediation(waiting, by="alice", at=LATER)
    assert not await journal.approve_remediation(waiting, by="bob", at=LATER)
    again = await journal.get_remediation(waiting)
    assert again is not None and again.approved_by == "alice"
    assert not await journal.approve_remediation("rem_nope", by="alice", at=LATER)
    assert await journal.outbox_backlog() == {}


async def test_to_api_reads_the_same_from_every_journal(journal: Journal) -> None:
    rid = await plant(journal)
    found = await journal.get_remediation(rid)
    assert found is not None
    api = found.to_api()
    assert api["created_at"] == "2026-11-27T10:00:00.000000Z"
    assert api["status"] == "planned"
    assert api["steps"] == []
