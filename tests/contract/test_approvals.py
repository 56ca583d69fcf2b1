"""ApprovalStore: requests, votes by distinct principals, four eyes, rejection, cancel,
escalation once, expiry, emergency reviews; and replicas racing on the same request."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta

from remediator.domain.approvals import (
    ApprovalConfig,
    ApprovalRequest,
    ResponseTime,
    ReviewStatus,
    Verdict,
    Vote,
    VoteResult,
    policy_for,
)
from remediator.domain.lifecycle import RemediationStatus
from remediator.ports import Journal, OutboxMessage
from tests.contract.builders import NOW, message, plant
from tests.contract.conftest import OpenReplica

S = RemediationStatus
DUE = NOW + timedelta(minutes=30)  # the response time of the requests below
EXPIRY = NOW + timedelta(hours=2)  # four times it


def request(
    *roles: str, requester: str | None = "rita", emergency: bool = False
) -> ApprovalRequest:
    policy = policy_for(
        approvers=roles, response_time=timedelta(minutes=30), emergency=emergency,
        config=ApprovalConfig(),
    )  # fmt: skip
    return ApprovalRequest(
        policy=policy, requested_at=NOW, requester=requester,
        scenario="severe_functional_defect", reason="checkout is broken", target="41",
    )  # fmt: skip


async def waiting(journal: Journal, approval: ApprovalRequest | None) -> str:
    return await plant(journal, status=S.AWAITING_APPROVAL, approval=approval,
                       approvers=("dba", "tech-lead"))  # fmt: skip


def vote(
    who: str, *roles: str, minutes: float = 5, verdict: Verdict = Verdict.APPROVE,
    comment: str | None = None,
) -> Vote:  # fmt: skip
    return Vote(principal=who, verdict=verdict, roles=roles,
                at=NOW + timedelta(minutes=minutes), comment=comment)  # fmt: skip


class Notices:
    """The outbox callable: remembers which results it was asked for."""

    def __init__(self) -> None:
        self.asked: list[VoteResult] = []

    def __call__(self, result: VoteResult) -> Sequence[OutboxMessage]:
        self.asked.append(result)
        return [message(900 + len(self.asked), channel="slack")]


async def test_a_waiting_plan_has_its_request_or_the_default_one(journal: Journal) -> None:
    asked = await waiting(journal, request("product-manager", "tech-lead"))
    found = await journal.get_remediation(asked)
    assert found is not None and found.approval is not None
    assert found.approval.request == request("product-manager", "tech-lead")
    assert found.approval.votes == ()
    # A waiting plan decided without a request gets the plan's approvers, default times.
    bare = await waiting(journal, None)
    found = await journal.get_remediation(bare)
    assert found is not None and found.approval is not None
    assert [s.label for s in found.approval.request.policy.seats] == ["dba", "tech-lead"]
    assert found.approval.request.expires_at == found.created_at + timedelta(hours=4)
    # A plan that needs no approval has none.
    planned = await journal.get_remediation(await plant(journal))
    assert planned is not None and planned.approval is None


async def test_distinct_principals_fill_every_seat_then_the_plan_runs(journal: Journal) -> None:
    rid = await waiting(journal, request("product-manager", "tech-lead"))
    notices = Notices()
    first = await journal.cast_vote(rid, vote=vote("alice", "tech-lead"), outbox=notices)
    assert first is VoteResult.RECORDED
    assert await journal.runnable_remediations(limit=10) == []
    last = await journal.cast_vote(
        rid, vote=vote("bob", "product-manager", minutes=7, comment="go"), outbox=notices
    )
    assert last is VoteResult.APPROVED
    assert notices.asked == [VoteResult.RECORDED, VoteResult.APPROVED]
    found = await journal.get_remediation(rid)
    assert found is not None and found.approval is not None
    assert found.status is S.PLANNED
    assert (found.approved_by, found.approved_as, found.approval_comment) == (
        "bob", ("product-manager",), "go",
    )  # fmt: skip
    assert found.approved_at == NOW + timedelta(minutes=7)
    assert [(v.principal, v.verdict, v.roles) for v in found.approval.votes] == [
        ("alice", Verdict.APPROVE, ("tech-lead",)),
        ("bob", Verdict.APPROVE, ("product-manager",)),
    ]
    assert found.approval.response() is ResponseTime.MET
    assert [r.id for r in await journal.runnable_remediations(limit=10)] == [rid]
    ids = {
        p.message.id
        for p in await journal.pending(
            channel="slack", limit=10, holder="x", at=NOW, lease_seconds=30
        )
    }
    assert ids == {"msg-901", "msg-902"}  # written with the votes  # fmt: skip
    # A late vote changes nothing and writes nothing.
    late = await journal.cast_vote(rid, vote=vote("carol", "tech-lead", minutes=8), outbox=notices)
    assert late is VoteResult.NOT_WAITING and len(notices.asked) == 2


async def test_refused_votes_change_nothing(journal: Journal) -> None:
    rid = await waiting(journal, request("product-manager", "tech-lead"))
    assert await journal.cast_vote(rid, vote=vote("alice", "tech-lead")) is VoteResult.RECORDED
    before = await journal.get_remediation(rid)
    notices = Notices()
    refused = [
        (vote("alice", "tech-lead", minutes=6), VoteResult.ALREADY_VOTED),
        (vote("alice", "product-manager", minutes=6), VoteResult.ALREADY_VOTED),
        (vote("rita", "product-manager", minutes=6), VoteResult.OWN_REQUEST),
        (vote("mallory", minutes=6), VoteResult.NOT_AN_APPROVER),
        (vote("mallory", "dba", minutes=6), VoteResult.NOT_AN_APPROVER),
    ]
    for cast, expected in refused:
        assert await journal.cast_vote(rid, vote=cast, outbox=notices) is expected
    assert notices.asked == []
    assert await journal.get_remediation(rid) == before
    assert await journal.cast_vote("rem_nope", vote=vote("bob")) is VoteResult.NOT_WAITING


async def test_one_rejection_ends_the_request(journal: Journal) -> None:
    rid = await waiting(journal, request("product-manager", "tech-lead"))
    await journal.cast_vote(rid, vote=vote("alice", "tech-lead"))
    no = vote("bob", "product-manager", minutes=9, verdict=Verdict.REJECT, comment="too risky")
    assert await journal.cast_vote(rid, vote=no) is VoteResult.REJECTED
    found = await journal.get_remediation(rid)
    assert found is not None and found.approval is not None
    assert (found.status, found.reason) == (S.REJECTED, "rejected by bob (product-manager): "
                                                        "too risky")  # fmt: skip
    assert found.finished_at == NOW + timedelta(minutes=9)
    assert found.approved_by is None
    assert await journal.runnable_remediations(limit=10) == []
    assert await journal.cast_vote(rid, vote=vote("carol", "tech-lead")) is VoteResult.NOT_WAITING


async def test_a_vote_at_the_expiry_ends_it_expired_and_is_not_recorded(journal: Journal) -> None:
    rid = await waiting(journal, request("tech-lead"))
    notices = Notices()
    late = vote("alice", "tech-lead", minutes=120)
    assert await journal.cast_vote(rid, vote=late, outbox=notices) is VoteResult.EXPIRED
    assert notices.asked == [VoteResult.EXPIRED]
    found = await journal.get_remediation(rid)
    assert found is not None and found.approval is not None
    assert found.status is S.EXPIRED and found.approval.votes == ()
    assert found.reason is not None and found.reason.startswith("expired: not approved within 2h")
    assert await journal.runnable_remediations(limit=10) == []


async def test_cancel_withdraws_a_waiting_or_unclaimed_plan_only(journal: Journal) -> None:
    rid = await waiting(journal, request("tech-lead"))
    assert await journal.cancel_remediation(rid, by="rita", at=DUE, reason="fixed forward",
                                            outbox=[message(1)])  # fmt: skip
    found = await journal.get_remediation(rid)
    assert found is not None
    assert (found.status, found.reason, found.finished_at) == (
        S.CANCELLED, "cancelled by rita: fixed forward", DUE,
    )  # fmt: skip
    assert not await journal.cancel_remediation(rid, by="rita", at=DUE)
    assert await journal.cast_vote(rid, vote=vote("alice", "tech-lead")) is VoteResult.NOT_WAITING
    planned = await plant(journal)
    assert await journal.cancel_remediation(planned, by="admin", at=DUE)
    # Claimed, it is the executor's: too late to cancel. Cancelled, nobody claims it.
    claimed = await plant(journal)
    assert await journal.claim_remediation(claimed, by="replica-a", at=NOW, to=S.RUNNING)
    assert not await journal.cancel_remediation(claimed, by="admin", at=DUE)
    assert not await journal.claim_remediation(planned, by="replica-a", at=DUE, to=S.RUNNING)
    assert [r.id for r in await journal.runnable_remediations(limit=10)] == []
    assert not await journal.cancel_remediation("rem_nope", by="admin", at=DUE)


async def test_escalation_is_noted_once_and_expiry_ends_the_request(journal: Journal) -> None:
    early = await waiting(journal, request("tech-lead"))
    approved = await waiting(journal, request("tech-lead"))
    await journal.cast_vote(approved, vote=vote("alice", "tech-lead"))
    assert await journal.due_approvals(now=DUE - timedelta(seconds=1), limit=10) == []
    due = await journal.due_approvals(now=DUE, limit=10)
    assert [r.id for r in due] == [early]
    assert due[0].approval is not None and due[0].status is S.AWAITING_APPROVAL
    assert not await journal.expire_approval(early, at=DUE, outbox=[message(1)])  # not yet
    assert await journal.mark_escalated(early, at=DUE, outbox=[message(2)])
    assert not await journal.mark_escalated(early, at=DUE + timedelta(minutes=1),
                                            outbox=[message(3)])  # fmt: skip
    assert not await journal.mark_escalated(approved, at=DUE)  # not waiting
    assert await journal.due_approvals(now=EXPIRY - timedelta(seconds=1), limit=10) == []
    found = await journal.get_remediation(early)
    assert found is not None and found.approval is not None
    assert found.approval.request.escalated_at == DUE
    assert found.approval.response() is ResponseTime.MISSED
    assert [r.id for r in await journal.due_approvals(now=EXPIRY, limit=10)] == [early]
    assert await journal.expire_approval(early, at=EXPIRY, outbox=[message(4)])
    assert not await journal.expire_approval(early, at=EXPIRY)
    assert await journal.due_approvals(now=EXPIRY + timedelta(days=1), limit=10) == []
    found = await journal.get_remediation(early)
    assert found is not None and (found.status, found.finished_at) == (S.EXPIRED, EXPIRY)
    backlog = await journal.outbox_backlog()
    assert backlog == {"kafka:remediator.outcomes": 2}  # the escalation's and the expiry's


async def test_an_approved_emergency_owes_a_review_until_closed(journal: Journal) -> None:
    rid = await waiting(journal, request(requester="rita", emergency=True))
    assert not await journal.close_review(rid, by="pat", at=DUE)  # nothing ran yet
    assert await journal.cast_vote(rid, vote=vote("lee", "tech-lead")) is VoteResult.APPROVED
    found = await journal.get_remediation(rid)
    assert found is not None and found.approval is not None
    assert found.approval.review_status() is ReviewStatus.OWED
    assert await journal.close_review(rid, by="pat", at=DUE, comment="justified")
    assert not await journal.close_review(rid, by="pat", at=DUE)
    found = await journal.get_remediation(rid)
    assert found is not None and found.approval is not None
    review = found.approval.request.review
    assert review is not None and (review.closed_by, review.closed_at, review.comment) == (
        "pat", DUE, "justified",
    )  # fmt: skip
    ordinary = await waiting(journal, request("tech-lead"))
    await journal.cast_vote(ordinary, vote=vote("lee", "tech-lead"))
    assert not await journal.close_review(ordinary, by="pat", at=DUE)


async def test_two_replicas_filling_the_last_seats_at_once_approve_once(
    replica: OpenReplica,
) -> None:
    a, b = await replica("replica-a"), await replica("replica-b")
    for _ in range(5):
        rid = await waiting(a, request("product-manager", "tech-lead"))
        results = await asyncio.gather(
            a.cast_vote(rid, vote=vote("alice", "tech-lead")),
            b.cast_vote(rid, vote=vote("bob", "product-manager", minutes=6)),
        )
        # Both count, whichever came first; exactly one of them completes the approval.
        assert sorted(results) == [VoteResult.APPROVED, VoteResult.RECORDED]
        found = await b.get_remediation(rid)
        assert found is not None and found.status is S.PLANNED
        assert found.approval is not None and len(found.approval.votes) == 2


async def test_the_same_principal_on_two_replicas_counts_once(replica: OpenReplica) -> None:
    a, b = await replica("replica-a"), await replica("replica-b")
    rid = await waiting(a, request("product-manager", "tech-lead"))
    both = vote("carol", "product-manager", "tech-lead")
    results = await asyncio.gather(a.cast_vote(rid, vote=both), b.cast_vote(rid, vote=both))
    assert sorted(results) == [VoteResult.ALREADY_VOTED, VoteResult.RECORDED]
    found = await a.get_remediation(rid)
    assert found is not None and found.status is S.AWAITING_APPROVAL


async def test_an_approval_racing_the_expiry_on_another_replica_never_both_win(
    replica: OpenReplica,
) -> None:
    a, b = await replica("replica-a"), await replica("replica-b")
    for _ in range(5):
        rid = await waiting(a, request("tech-lead"))
        voted, expired = await asyncio.gather(
            a.cast_vote(rid, vote=vote("alice", "tech-lead", minutes=119)),
            b.expire_approval(rid, at=EXPIRY),
        )
        found = await a.get_remediation(rid)
        assert found is not None
        if voted is VoteResult.APPROVED:
            assert not expired and found.status is S.PLANNED
        else:
            assert voted is VoteResult.NOT_WAITING and expired and found.status is S.EXPIRED
