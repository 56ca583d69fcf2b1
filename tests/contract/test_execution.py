"""ExecutionLog: claims, the lifecycle's transitions, fencing by the claim's holder,
take-over of a gone replica's claims."""

from __future__ import annotations

from datetime import timedelta

import pytest

from remediator.domain.lifecycle import (
    TRANSITIONS,
    ClaimLost,
    IllegalTransition,
    RemediationStatus,
    StepStatus,
)
from remediator.ports import Journal
from tests.contract.builders import NOW, Clock, message, plant, running
from tests.contract.conftest import OpenReplica

S = RemediationStatus
LATER = NOW + timedelta(minutes=5)
STALE_AFTER = timedelta(seconds=30)


async def test_runnable_plans_are_unclaimed_planned_or_dry_run_oldest_first(
    journal: Journal,
) -> None:
    planned = await plant(journal)
    rehearsal = await plant(journal, status=S.DRY_RUN)
    for status in (S.SKIPPED, S.AWAITING_APPROVAL):
        await plant(journal, status=status)
    await running(journal)
    runnable = await journal.runnable_remediations(limit=10)
    assert [r.id for r in runnable] == [planned, rehearsal]
    assert all(r.decision is not None for r in runnable)
    assert [r.id for r in await journal.runnable_remediations(limit=1)] == [planned]


async def test_a_claim_moves_a_plan_to_running_once(journal: Journal) -> None:
    rid = await plant(journal)
    assert await journal.claim_remediation(rid, by="replica-a", at=LATER, to=S.RUNNING,
                                           outbox=[message(1)])  # fmt: skip
    found = await journal.get_remediation(rid)
    assert found is not None
    assert (found.status, found.claimed_by, found.claimed_at, found.updated_at) == (
        S.RUNNING, "replica-a", LATER, LATER,
    )  # fmt: skip
    assert not await journal.claim_remediation(rid, by="replica-b", at=LATER, to=S.RUNNING,
                                               outbox=[message(2)])  # fmt: skip
    again = await journal.get_remediation(rid)
    assert again is not None and again.claimed_by == "replica-a"
    assert await journal.outbox_backlog() == {"kafka:remediator.outcomes": 1}
    assert await journal.runnable_remediations(limit=10) == []
    assert not await journal.claim_remediation("rem_nope", by="replica-a", at=LATER, to=S.RUNNING)


async def test_a_finished_plan_cannot_be_claimed(journal: Journal) -> None:
    rid = await running(journal)
    await journal.finish_remediation(rid, holder="replica-a", status=S.SUCCEEDED, reason=None,
                                     at=LATER)  # fmt: skip
    assert not await journal.claim_remediation(rid, by="replica-b", at=LATER, to=S.RUNNING)


@pytest.mark.parametrize(
    ("initial", "to"),
    [
        (S.PLANNED, S.RUNNING),
        (S.PLANNED, S.DRY_RUN),  # the executor itself runs dry
        (S.DRY_RUN, S.DRY_RUN),  # a rehearsal keeps its status
    ],
)
async def test_claims_the_lifecycle_allows(
    journal: Journal, initial: RemediationStatus, to: RemediationStatus
) -> None:
    rid = await plant(journal, status=initial)
    assert await journal.claim_remediation(rid, by="replica-a", at=LATER, to=to)
    found = await journal.get_remediation(rid)
    assert found is not None
    assert (found.status, found.claimed_by) == (to, "replica-a")


@pytest.mark.parametrize(
    ("initial", "to"),
    [
        (S.AWAITING_APPROVAL, S.RUNNING),  # not approved yet
        (S.SKIPPED, S.RUNNING),
        (S.DRY_RUN, S.RUNNING),  # a rehearsal never acts
        (S.PLANNED, S.SUCCEEDED),
    ],
)
async def test_claims_the_lifecycle_refuses_write_nothing(
    journal: Journal, initial: RemediationStatus, to: RemediationStatus
) -> None:
    rid = await plant(journal, status=initial)
    with pytest.raises(IllegalTransition) as caught:
        await journal.claim_remediation(rid, by="replica-a", at=LATER, to=to,
                                        outbox=[message(1)])  # fmt: skip
    assert (caught.value.old, caught.value.new) == (initial, to)
    found = await journal.get_remediation(rid)
    assert found is not None
    assert (found.status, found.claimed_by, found.updated_at) == (initial, None, NOW)
    assert await journal.outbox_backlog() == {}


@pytest.mark.parametrize("claimed_as", [S.RUNNING, S.DRY_RUN])
async def test_every_end_of_a_claimed_plan_is_allowed_or_refused_as_the_lifecycle_says(
    journal: Journal, claimed_as: RemediationStatus
) -> None:
    initial = S.DRY_RUN if claimed_as is S.DRY_RUN else S.PLANNED
    for n, end in enumerate(RemediationStatus):
        rid = await plant(journal, status=initial)
        assert await journal.claim_remediation(rid, by="replica-a", at=NOW, to=claimed_as)
        finishing = journal.finish_remediation(
            rid, holder="replica-a", status=end, reason=f"ended {end.value}", at=LATER,
            outbox=[message(n)],
        )  # fmt: skip
        found_before = await journal.get_remediation(rid)
        assert found_before is not None
        if end in TRANSITIONS[claimed_as]:
            await finishing
            found = await journal.get_remediation(rid)
            assert found is not None
            assert (found.status, found.finished_at, found.reason) == (
                end, LATER, f"ended {end.value}",
            )  # fmt: skip
            assert found.finished
        else:
            with pytest.raises(IllegalTransition):
                await finishing
            found = await journal.get_remediation(rid)
            assert found == found_before  # nothing written
    expected_ends = len(TRANSITIONS[claimed_as])
    assert await journal.outbox_backlog() == {"kafka:remediator.outcomes": expected_ends}


async def test_a_finished_plan_takes_the_same_end_again_and_no_other(journal: Journal) -> None:
    rid = await running(journal)
    await journal.finish_remediation(rid, holder="replica-a", status=S.FAILED, reason="boom",
                                     at=LATER)  # fmt: skip
    # A retry of a write that outlived its caller's deadline but stood: nothing changes.
    await journal.finish_remediation(rid, holder="replica-a", status=S.FAILED, reason="again",
                                     at=LATER + timedelta(minutes=1), outbox=[message(1)])  # fmt: skip
    with pytest.raises(IllegalTransition):
        await journal.finish_remediation(rid, holder="replica-a", status=S.SUCCEEDED,
                                         reason=None, at=LATER)  # fmt: skip
    found = await journal.get_remediation(rid)
    assert found is not None
    assert (found.status, found.reason, found.finished_at) == (S.FAILED, "boom", LATER)
    assert await journal.outbox_backlog() == {}


async def test_a_finish_without_a_reason_keeps_the_one_it_had(journal: Journal) -> None:
    rid = await plant(journal, status=S.DRY_RUN)
    assert await journal.claim_remediation(rid, by="replica-a", at=NOW, to=S.DRY_RUN)
    await journal.finish_remediation(rid, holder="replica-a", status=S.DRY_RUN, reason=None,
                                     at=LATER)  # fmt: skip
    found = await journal.get_remediation(rid)
    assert found is not None
    assert (found.status, found.finished_at) == (S.DRY_RUN, LATER)


async def test_writes_by_an_instance_that_lost_the_claim_are_refused(journal: Journal) -> None:
    rid = await running(journal, holder="replica-a")
    await journal.step_started(rid, holder="replica-a", idx=0, kind="rollout_undo", at=NOW)
    assert await journal.take_over_claim(rid, from_holder="replica-a", by="replica-b", at=LATER)
    with pytest.raises(ClaimLost):
        await journal.step_finished(rid, holder="replica-a", idx=0, status=StepStatus.SUCCEEDED,
                                    detail={"done": True}, at=LATER)  # fmt: skip
    with pytest.raises(ClaimLost):
        await journal.step_started(rid, holder="replica-a", idx=1, kind="wait_rollout", at=LATER)
    with pytest.raises(ClaimLost):
        await journal.finish_remediation(rid, holder="replica-a", status=S.SUCCEEDED, reason=None,
                                         at=LATER, outbox=[message(1)])  # fmt: skip
    found = await journal.get_remediation(rid)
    assert found is not None
    assert (found.status, found.claimed_by, found.finished_at) == (S.RUNNING, "replica-b", None)
    assert found.steps is not None
    assert [(s.idx, s.status) for s in found.steps] == [(0, StepStatus.STARTED)]
    assert await journal.outbox_backlog() == {}
    # The new holder carries on.
    await journal.step_finished(rid, holder="replica-b", idx=0, status=StepStatus.FAILED,
                                detail={"error": "x"}, at=LATER)  # fmt: skip
    await journal.finish_remediation(rid, holder="replica-b", status=S.FAILED, reason="x",
                                     at=LATER)  # fmt: skip
    done = await journal.get_remediation(rid)
    assert done is not None and done.status is S.FAILED


async def test_writes_about_an_unclaimed_plan_are_refused(journal: Journal) -> None:
    rid = await plant(journal)
    with pytest.raises(ClaimLost):
        await journal.step_started(rid, holder="replica-a", idx=0, kind="rollout_undo", at=NOW)
    with pytest.raises(ClaimLost):
        await journal.finish_remediation(rid, holder="replica-a", status=S.FAILED, reason=None,
                                         at=NOW)  # fmt: skip
    assert await journal.remediation_steps(rid) == []


async def test_take_over_is_a_compare_and_set_on_the_holder(journal: Journal) -> None:
    rid = await running(journal, holder="replica-a")
    assert await journal.take_over_claim(rid, from_holder="replica-a", by="replica-b", at=LATER)
    # A third replica that also saw replica-a's claim loses.
    assert not await journal.take_over_claim(rid, from_holder="replica-a", by="replica-c",
                                             at=LATER)  # fmt: skip
    found = await journal.get_remediation(rid)
    assert found is not None and found.claimed_by == "replica-b"
    await journal.finish_remediation(rid, holder="replica-b", status=S.SUCCEEDED, reason=None,
                                     at=LATER)  # fmt: skip
    assert not await journal.take_over_claim(rid, from_holder="replica-b", by="replica-c",
                                             at=LATER)  # fmt: skip
    assert not await journal.take_over_claim("rem_nope", from_holder="a", by="b", at=LATER)


async def test_unfinished_claims_are_ones_own_and_those_of_silent_replicas(
    replica: OpenReplica, clock: Clock
) -> None:
    a = await replica("replica-a")
    b = await replica("replica-b")
    await a.check_writable()  # beats at NOW
    await b.check_writable()
    mine = await running(a, holder="replica-a")
    theirs = await running(a, holder="replica-b")
    never_beat = await running(a, holder="replica-gone")
    finished = await running(a, holder="replica-a")
    await a.finish_remediation(finished, holder="replica-a", status=S.SUCCEEDED, reason=None,
                               at=NOW)  # fmt: skip
    await plant(a)  # unclaimed: not a claim to recover
    await a.step_started(mine, holder="replica-a", idx=0, kind="rollout_undo", at=NOW)

    fresh = await a.unfinished_claims(holder="replica-a", stale_before=NOW - STALE_AFTER)
    assert [r.id for r in fresh] == [mine, never_beat]
    assert fresh[0].steps is not None and [s.idx for s in fresh[0].steps] == [0]
    assert fresh[0].decision is not None

    # replica-b stops beating; replica-a keeps on.
    clock.advance(31)
    await a.check_writable()
    later = await a.unfinished_claims(holder="replica-a", stale_before=clock.now - STALE_AFTER)
    assert [r.id for r in later] == [mine, theirs, never_beat]
    # From replica-b's side, replica-a is alive: its claim is not b's to recover.
    seen_by_b = await b.unfinished_claims(holder="replica-b", stale_before=clock.now - STALE_AFTER)
    assert [r.id for r in seen_by_b] == [theirs, never_beat]


async def test_a_heartbeat_is_per_instance(replica: OpenReplica, clock: Clock) -> None:
    a = await replica("replica-a")
    b = await replica("replica-b")
    theirs = await running(a, holder="replica-b")
    await b.check_writable()
    clock.advance(60)
    await a.check_writable()  # a's beat must not count as b's
    stale = await a.unfinished_claims(holder="replica-a", stale_before=clock.now - STALE_AFTER)
    assert [r.id for r in stale] == [theirs]
    await b.check_writable()
    assert await a.unfinished_claims(holder="replica-a", stale_before=clock.now - STALE_AFTER) == []
