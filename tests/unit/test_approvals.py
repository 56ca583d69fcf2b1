"""The approval policy (pure): seats filled by distinct principals, four eyes, one
rejection ends it, response time and hard expiry, the emergency path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from remediator.domain.approvals import (
    ApprovalConfig,
    ApprovalPolicy,
    ApprovalRequest,
    ApprovalState,
    Approved,
    Pending,
    Rejected,
    ResponseTime,
    Review,
    ReviewStatus,
    Seat,
    Verdict,
    Vote,
    default_request,
    evaluate,
    policy_for,
)

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
CONFIG = ApprovalConfig()


def vote(principal: str, *roles: str, minute: int = 1, verdict: Verdict = Verdict.APPROVE) -> Vote:
    return Vote(
        principal=principal, verdict=verdict, roles=roles, at=T0 + timedelta(minutes=minute)
    )


def policy(*roles: str, minutes: int = 30) -> ApprovalPolicy:
    return policy_for(
        approvers=roles, response_time=timedelta(minutes=minutes), emergency=False, config=CONFIG
    )


PM_AND_LEAD = policy("product-manager", "tech-lead")


def test_every_named_role_needs_its_own_principal() -> None:
    one = evaluate(PM_AND_LEAD, requester="rita", votes=[vote("alice", "tech-lead")])
    assert isinstance(one, Pending)
    assert [seat.label for seat in one.missing] == ["product-manager"]
    assert [(a.role, a.principal) for a in one.assignment] == [("tech-lead", "alice")]
    both = evaluate(
        PM_AND_LEAD, requester="rita",
        votes=[vote("alice", "tech-lead"), vote("bob", "product-manager", minute=7)],
    )  # fmt: skip
    assert isinstance(both, Approved)
    assert {(a.role, a.principal) for a in both.assignment} == {
        ("product-manager", "bob"), ("tech-lead", "alice"),
    }  # fmt: skip
    assert both.at == T0 + timedelta(minutes=7)


def test_one_principal_holding_both_roles_fills_one_seat_only() -> None:
    outcome = evaluate(
        PM_AND_LEAD, requester="rita", votes=[vote("carol", "product-manager", "tech-lead")]
    )
    assert isinstance(outcome, Pending) and len(outcome.missing) == 1


def test_the_same_principal_twice_counts_once() -> None:
    outcome = evaluate(
        PM_AND_LEAD, requester="rita",
        votes=[vote("carol", "product-manager", "tech-lead"),
               vote("carol", "product-manager", "tech-lead", minute=2)],
    )  # fmt: skip
    assert isinstance(outcome, Pending)


def test_the_matching_moves_a_two_role_principal_to_the_seat_only_it_can_fill() -> None:
    # carol came first and could sit as tech-lead; dave can only be tech-lead, so carol
    # is moved to product-manager and both seats are filled.
    outcome = evaluate(
        PM_AND_LEAD, requester="rita",
        votes=[vote("carol", "product-manager", "tech-lead"), vote("dave", "tech-lead", minute=3)],
    )  # fmt: skip
    assert isinstance(outcome, Approved)
    assert {(a.role, a.principal) for a in outcome.assignment} == {
        ("product-manager", "carol"), ("tech-lead", "dave"),
    }  # fmt: skip


def test_the_requester_never_counts() -> None:
    outcome = evaluate(policy("tech-lead"), requester="alice", votes=[vote("alice", "tech-lead")])
    assert isinstance(outcome, Pending)
    rejected = evaluate(
        policy("tech-lead"), requester="alice",
        votes=[vote("alice", "tech-lead", verdict=Verdict.REJECT)],
    )  # fmt: skip
    assert isinstance(rejected, Pending)


def test_one_rejection_by_an_eligible_approver_ends_it() -> None:
    no = vote("bob", "product-manager", minute=2, verdict=Verdict.REJECT)
    outcome = evaluate(PM_AND_LEAD, requester="rita", votes=[vote("alice", "tech-lead"), no])
    assert outcome == Rejected(by=no)


def test_votes_after_approval_change_nothing_and_votes_without_a_role_are_ignored() -> None:
    votes = [
        vote("mallory", minute=0, verdict=Verdict.REJECT),  # holds no named role
        vote("alice", "tech-lead"),
        vote("bob", "product-manager", minute=2),
        vote("carol", "tech-lead", minute=3, verdict=Verdict.REJECT),
    ]
    assert isinstance(evaluate(PM_AND_LEAD, requester=None, votes=votes), Approved)


def test_a_plan_naming_no_approvers_takes_any_one_approver() -> None:
    anyone = policy()
    assert anyone.seats == (Seat(),) and anyone.open
    assert anyone.may_vote(())
    assert isinstance(evaluate(anyone, requester="rita", votes=[vote("zoe")]), Approved)


def test_the_policy_says_who_may_vote() -> None:
    assert PM_AND_LEAD.may_vote(["dba", "tech-lead"])
    assert not PM_AND_LEAD.may_vote(["dba"])
    assert PM_AND_LEAD.relevant_roles(["tech-lead", "dba", "product-manager"]) == (
        "product-manager", "tech-lead",
    )  # fmt: skip


def test_emergency_needs_one_approver_from_the_configured_set() -> None:
    config = ApprovalConfig(emergency_roles=("tech-lead", "security-lead"))
    emergency = policy_for(
        approvers=("dba", "tech-lead"), response_time=timedelta(minutes=15), emergency=True,
        config=config,
    )  # fmt: skip
    assert emergency.seats == (Seat(roles=("tech-lead", "security-lead")),)
    assert emergency.emergency
    outcome = evaluate(emergency, requester="rita", votes=[vote("sam", "security-lead")])
    assert isinstance(outcome, Approved)
    assert [(a.role, a.principal) for a in outcome.assignment] == [("security-lead", "sam")]


def test_response_time_and_expiry_follow_the_rule_the_factor_and_the_scale() -> None:
    p = policy_for(
        approvers=("dba",), response_time=timedelta(minutes=15), emergency=False,
        config=ApprovalConfig(expiry_factor=3, time_scale=0.5),
    )  # fmt: skip
    assert (p.response_time, p.expires_after) == (
        timedelta(minutes=7, seconds=30), timedelta(minutes=22, seconds=30),
    )  # fmt: skip
    unset = policy_for(approvers=(), response_time=None, emergency=False, config=CONFIG)
    assert (unset.response_time, unset.expires_after) == (timedelta(hours=1), timedelta(hours=4))
    request = ApprovalRequest(policy=p, requested_at=T0)
    assert request.response_due_at == T0 + timedelta(minutes=7, seconds=30)
    assert not request.escalation_due(T0 + timedelta(minutes=7))
    assert request.escalation_due(T0 + timedelta(minutes=7, seconds=30))
    assert not request.expired(T0 + timedelta(minutes=22))
    assert request.expired(T0 + timedelta(minutes=22, seconds=30))
    escalated = request.model_copy(update={"escalated_at": T0 + timedelta(minutes=8)})
    assert not escalated.escalation_due(T0 + timedelta(minutes=9))


def test_a_request_waiting_before_policies_were_stored_gets_the_defaults() -> None:
    request = default_request(["dba", "tech-lead"], T0)
    assert [s.label for s in request.policy.seats] == ["dba", "tech-lead"]
    assert request.expires_at == T0 + timedelta(hours=4)


@pytest.mark.parametrize(
    ("votes", "escalated", "expected"),
    [
        ([], None, ResponseTime.PENDING),
        ([], 31, ResponseTime.MISSED),
        ([vote("a", "tech-lead", minute=10)], None, ResponseTime.MET),
        ([vote("a", "tech-lead", minute=10, verdict=Verdict.REJECT)], None, ResponseTime.MET),
        ([vote("a", "tech-lead", minute=45)], 31, ResponseTime.MISSED),
    ],
)
def test_the_response_time_is_met_or_missed(
    votes: list[Vote], escalated: int | None, expected: ResponseTime
) -> None:
    request = ApprovalRequest(
        policy=policy("tech-lead"), requested_at=T0, requester="rita",
        escalated_at=None if escalated is None else T0 + timedelta(minutes=escalated),
    )  # fmt: skip
    assert ApprovalState(request=request, votes=tuple(votes)).response() is expected


def test_an_approved_emergency_owes_a_review_until_closed() -> None:
    emergency = policy_for(approvers=(), response_time=None, emergency=True, config=CONFIG)
    request = ApprovalRequest(policy=emergency, requested_at=T0, requester="rita")
    waiting = ApprovalState(request=request)
    assert waiting.review_status() is ReviewStatus.NONE  # nothing ran yet
    approved = ApprovalState(request=request, votes=(vote("lee", "tech-lead"),))
    assert approved.review_status() is ReviewStatus.OWED
    assert approved.to_api()["review"]["status"] == "owed"
    closed = ApprovalState(
        request=request.model_copy(
            update={"review": Review(closed_by="pat", closed_at=T0 + timedelta(days=1))}
        ),
        votes=approved.votes,
    )
    assert closed.review_status() is ReviewStatus.CLOSED
    assert closed.to_api()["review"]["closed_by"] == "pat"


def test_the_api_form_names_what_is_missing_and_who_approved_as_what() -> None:
    state = ApprovalState(
        request=ApprovalRequest(
            policy=PM_AND_LEAD, requested_at=T0, requester="rita",
            scenario="severe_functional_defect", reason="checkout broken", target="41",
        ),
        votes=(vote("alice", "tech-lead"),),
    )  # fmt: skip
    api = state.to_api()
    assert api["state"] == "pending"
    assert api["required"] == ["product-manager", "tech-lead"]
    assert api["missing"] == ["product-manager"]
    assert api["approvers"] == [
        {"role": "tech-lead", "principal": "alice", "at": "2026-11-27T10:01:00.000000Z"}
    ]
    assert api["response_due_at"] == "2026-11-27T10:30:00.000000Z"
    assert api["expires_at"] == "2026-11-27T12:00:00.000000Z"
    assert (api["requester"], api["target"], api["emergency"]) == ("rita", "41", False)
