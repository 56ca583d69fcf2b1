"""Approvals (pure): who must approve a plan, what the votes so far amount to, and when
people must have answered.

A plan that needs approval carries an ``ApprovalPolicy``: the seats to fill (one per
approver role the rule names, each by a *distinct* principal holding that role), the
response time (the rule's ``approval_timeout``: past it the request is escalated) and the
hard expiry (past it the request ends ``expired`` and never runs). ``evaluate`` reads
the votes in the order they were cast: the requester's never count (four eyes), a
principal counts once, and one rejection by an eligible approver ends the request.
Seats are filled by a bipartite matching, so a principal holding two of the named roles
fills whichever seat leaves the others fillable, and never two seats at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from remediator.domain.times import utc_text

# What an upgraded journal gives requests that were waiting before policies were
# stored, and rules without ``approval_timeout``: answer within an hour, gone after four.
DEFAULT_RESPONSE_TIME = timedelta(hours=1)
DEFAULT_EXPIRY_FACTOR = 4.0
DEFAULT_EMERGENCY_ROLES = ("tech-lead",)
# Manual rollback scenarios (plan 3.1.2); the shipped manual-* rules match them.
SCENARIOS = (
    "severe_functional_defect",
    "data_consistency",
    "security_vulnerability",
    "performance_degradation",
    "user_experience",
    "third_party_failure",
)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Verdict(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


class Seat(_Frozen):
    """One approval a plan needs: a principal holding one of ``roles`` (when empty, any
    principal allowed to approve)."""

    roles: tuple[str, ...] = ()

    def accepts(self, held: Iterable[str]) -> bool:
        return not self.roles or any(role in self.roles for role in held)

    @property
    def label(self) -> str:
        return " or ".join(self.roles) or "any approver"


class ApprovalPolicy(_Frozen):
    seats: tuple[Seat, ...] = Field(min_length=1)
    response_time: timedelta
    expires_after: timedelta
    emergency: bool = False

    @property
    def roles(self) -> tuple[str, ...]:
        """Every approver role a seat names, in seat order, once each."""
        return tuple(dict.fromkeys(role for seat in self.seats for role in seat.roles))

    @property
    def open(self) -> bool:
        """Some seat takes any principal allowed to approve."""
        return any(not seat.roles for seat in self.seats)

    def relevant_roles(self, held: Iterable[str]) -> tuple[str, ...]:
        """The roles among ``held`` that fill a seat, in the policy's order."""
        mine = set(held)
        return tuple(role for role in self.roles if role in mine)

    def may_vote(self, held: Iterable[str]) -> bool:
        """Whether a principal with approver roles ``held`` may approve or reject."""
        return self.open or bool(self.relevant_roles(held))

    def required_text(self) -> str:
        return " + ".join(seat.label for seat in self.seats)


class Vote(_Frozen):
    principal: str
    verdict: Verdict
    # The policy's approver roles the principal held when voting.
    roles: tuple[str, ...] = ()
    at: AwareDatetime
    comment: str | None = None


class Assignment(_Frozen):
    """Which principal filled a seat, and as which of its roles."""

    role: str  # the seat's role the principal holds (the seat's label for an open seat)
    principal: str
    at: AwareDatetime


class Pending(_Frozen):
    state: Literal["pending"] = "pending"
    missing: tuple[Seat, ...]
    assignment: tuple[Assignment, ...] = ()  # the seats filled so far


class Approved(_Frozen):
    state: Literal["approved"] = "approved"
    assignment: tuple[Assignment, ...]
    at: AwareDatetime  # when the last seat was filled


class Rejected(_Frozen):
    state: Literal["rejected"] = "rejected"
    by: Vote


Outcome = Pending | Approved | Rejected


def evaluate(policy: ApprovalPolicy, *, requester: str | None, votes: Sequence[Vote]) -> Outcome:
    """What ``votes`` amount to, read in the order they were cast.

    Ignored: the requester's votes, every vote of a principal after its first, and
    votes of principals who hold none of the seats' roles. The first counted rejection
    before every seat is filled rejects the request; once every seat is filled by a
    distinct principal it is approved, and later votes change nothing.
    """
    matcher = _SeatMatcher(policy.seats)
    seen: set[str] = set()
    for vote in sorted(votes, key=lambda v: v.at):
        if vote.principal == requester or vote.principal in seen:
            continue
        seen.add(vote.principal)
        if not policy.may_vote(vote.roles):
            continue
        if vote.verdict is Verdict.REJECT:
            return Rejected(by=vote)
        matcher.add(vote)
        if matcher.complete:
            return Approved(assignment=matcher.assignment(), at=vote.at)
    return Pending(missing=matcher.missing(), assignment=matcher.assignment())


class _SeatMatcher:
    """Seats filled by distinct principals: a maximum bipartite matching, grown one
    principal at a time by an augmenting path (Kuhn's algorithm; a few seats at most)."""

    def __init__(self, seats: tuple[Seat, ...]) -> None:
        self._seats = seats
        self._votes: dict[str, Vote] = {}
        self._holder: dict[int, str] = {}  # seat index -> principal

    @property
    def complete(self) -> bool:
        return len(self._holder) == len(self._seats)

    def add(self, vote: Vote) -> None:
        self._votes[vote.principal] = vote
        self._augment(vote.principal, set())

    def _augment(self, principal: str, visited: set[int]) -> bool:
        roles = self._votes[principal].roles
        for index, seat in enumerate(self._seats):
            if index in visited or not seat.accepts(roles):
                continue
            visited.add(index)
            holder = self._holder.get(index)
            if holder is None or self._augment(holder, visited):
                self._holder[index] = principal
                return True
        return False

    def missing(self) -> tuple[Seat, ...]:
        return tuple(seat for i, seat in enumerate(self._seats) if i not in self._holder)

    def assignment(self) -> tuple[Assignment, ...]:
        filled = []
        for index in sorted(self._holder):
            seat, vote = self._seats[index], self._votes[self._holder[index]]
            role = next((r for r in vote.roles if r in seat.roles), seat.label)
            filled.append(Assignment(role=role, principal=vote.principal, at=vote.at))
        return tuple(filled)


# -- requests --------------------------------------------------------------------------


class ApprovalConfig(_Frozen):
    """The daemon's approval settings (``approvals.*``)."""

    default_response_time: timedelta = DEFAULT_RESPONSE_TIME
    expiry_factor: float = Field(default=DEFAULT_EXPIRY_FACTOR, ge=1.0)
    emergency_roles: tuple[str, ...] = Field(default=DEFAULT_EMERGENCY_ROLES, min_length=1)
    # Testing only: every response time and expiry is multiplied by this.
    time_scale: float = Field(default=1.0, gt=0)


def policy_for(
    *,
    approvers: Sequence[str],
    response_time: timedelta | None,
    emergency: bool,
    config: ApprovalConfig,
) -> ApprovalPolicy:
    """The policy of a plan whose rule names ``approvers`` and ``response_time``.

    One seat per named role (distinct principals); none named: one seat anyone allowed
    to approve fills. An emergency needs one approver from the configured emergency
    roles instead (plan 3.10), and owes a review afterwards.
    """
    if emergency:
        seats: tuple[Seat, ...] = (Seat(roles=tuple(config.emergency_roles)),)
    else:
        seats = tuple(Seat(roles=(role,)) for role in dict.fromkeys(approvers)) or (Seat(),)
    respond = (response_time or config.default_response_time) * config.time_scale
    return ApprovalPolicy(
        seats=seats,
        response_time=respond,
        expires_after=respond * config.expiry_factor,
        emergency=emergency,
    )


class Review(_Frozen):
    """The review an emergency approval owes, once someone closed it."""

    closed_by: str
    closed_at: AwareDatetime
    comment: str | None = None


class ApprovalRequest(_Frozen):
    """What a plan waiting for approval was asked with: by whom (None: an alert's
    plan), why, and under which policy, from ``requested_at``."""

    policy: ApprovalPolicy
    requested_at: AwareDatetime
    requester: str | None = None
    scenario: str | None = None
    reason: str | None = None
    target: str | None = None
    escalated_at: AwareDatetime | None = None
    review: Review | None = None

    @property
    def response_due_at(self) -> datetime:
        return self.requested_at + self.policy.response_time

    @property
    def expires_at(self) -> datetime:
        return self.requested_at + self.policy.expires_after

    def expired(self, now: datetime) -> bool:
        return now >= self.expires_at

    def escalation_due(self, now: datetime) -> bool:
        return self.escalated_at is None and now >= self.response_due_at


def default_request(approvers: Sequence[str], requested_at: datetime) -> ApprovalRequest:
    """The request of a plan waiting without one (journaled before requests were):
    the default response time and expiry."""
    policy = policy_for(
        approvers=approvers, response_time=None, emergency=False, config=ApprovalConfig()
    )
    return ApprovalRequest(policy=policy, requested_at=requested_at)


class ResponseTime(StrEnum):
    MET = "met"  # approved or rejected within the response time
    MISSED = "missed"  # answered late, escalated, or expired
    PENDING = "pending"  # still waiting (or withdrawn) before the response time passed


class ReviewStatus(StrEnum):
    NONE = "none"  # not an emergency, or it never ran
    OWED = "owed"
    CLOSED = "closed"


class ApprovalState(_Frozen):
    """A request and the votes cast on it, oldest first."""

    request: ApprovalRequest
    votes: tuple[Vote, ...] = ()

    @field_validator("votes")
    @classmethod
    def _in_time_order(cls, value: tuple[Vote, ...]) -> tuple[Vote, ...]:
        return tuple(sorted(value, key=lambda vote: vote.at))

    @property
    def outcome(self) -> Outcome:
        return evaluate(self.request.policy, requester=self.request.requester, votes=self.votes)

    def voted(self, principal: str) -> Vote | None:
        return next((vote for vote in self.votes if vote.principal == principal), None)

    def answered_at(self) -> datetime | None:
        outcome = self.outcome
        if isinstance(outcome, Approved):
            return outcome.at
        if isinstance(outcome, Rejected):
            return outcome.by.at
        return None

    def response(self) -> ResponseTime:
        answered = self.answered_at()
        due = self.request.response_due_at
        if answered is not None:
            return ResponseTime.MET if answered <= due else ResponseTime.MISSED
        if self.request.escalated_at is not None:
            return ResponseTime.MISSED
        return ResponseTime.PENDING

    def review_status(self) -> ReviewStatus:
        if not self.request.policy.emergency or not isinstance(self.outcome, Approved):
            return ReviewStatus.NONE
        return ReviewStatus.OWED if self.request.review is None else ReviewStatus.CLOSED

    def to_api(self) -> dict[str, Any]:
        request, outcome = self.request, self.outcome
        review = request.review
        return {
            "requester": request.requester,
            "scenario": request.scenario,
            "reason": request.reason,
            "target": request.target,
            "emergency": request.policy.emergency,
            "required": [seat.label for seat in request.policy.seats],
            "response_time_seconds": request.policy.response_time.total_seconds(),
            "requested_at": _text(request.requested_at),
            "response_due_at": _text(request.response_due_at),
            "expires_at": _text(request.expires_at),
            "escalated_at": None if request.escalated_at is None else _text(request.escalated_at),
            "state": outcome.state,
            "missing": [s.label for s in outcome.missing] if isinstance(outcome, Pending) else [],
            "approvers": [
                {"role": a.role, "principal": a.principal, "at": _text(a.at)}
                for a in (outcome.assignment if not isinstance(outcome, Rejected) else ())
            ],
            "votes": [_vote_api(vote) for vote in self.votes],
            "response": self.response().value,
            "review": {
                "status": self.review_status().value,
                "closed_by": None if review is None else review.closed_by,
                "closed_at": None if review is None else _text(review.closed_at),
                "comment": None if review is None else review.comment,
            },
        }


class VoteResult(StrEnum):
    """What a vote on a plan awaiting approval comes to."""

    RECORDED = "recorded"  # counted; other seats are still empty
    APPROVED = "approved"  # it filled the last seat: the plan becomes planned (runnable)
    REJECTED = "rejected"  # it rejected the request: the plan ends rejected
    EXPIRED = "expired"  # cast at or past the hard expiry: the request ends expired instead
    ALREADY_VOTED = "already_voted"  # this principal voted on it before
    OWN_REQUEST = "own_request"  # the requester cannot approve or reject its own request
    NOT_AN_APPROVER = "not_an_approver"  # holds none of the roles the policy names
    NOT_WAITING = "not_waiting"  # gone, or no longer awaiting approval

    @property
    def counted(self) -> bool:
        return self in (VoteResult.RECORDED, VoteResult.APPROVED, VoteResult.REJECTED)

    @property
    def changes(self) -> bool:
        """The vote was recorded, or the request ended because of it."""
        return self.counted or self is VoteResult.EXPIRED


def judge_vote(state: ApprovalState, vote: Vote) -> VoteResult:
    """What ``vote`` does to a request still awaiting approval (the journal applies it
    in one transaction with the status change)."""
    request = state.request
    if request.expired(vote.at):
        return VoteResult.EXPIRED
    if vote.principal == request.requester:
        return VoteResult.OWN_REQUEST
    if state.voted(vote.principal) is not None:
        return VoteResult.ALREADY_VOTED
    if not request.policy.may_vote(vote.roles):
        return VoteResult.NOT_AN_APPROVER
    outcome = ApprovalState(request=request, votes=(*state.votes, vote)).outcome
    if isinstance(outcome, Approved):
        return VoteResult.APPROVED
    if isinstance(outcome, Rejected):
        return VoteResult.REJECTED
    return VoteResult.RECORDED


def approved_as(state: ApprovalState, principal: str) -> tuple[str, ...]:
    """The roles ``principal`` fills in the state's approval (none while pending)."""
    outcome = state.outcome
    if not isinstance(outcome, Approved):
        return ()
    named = state.request.policy.roles  # an open seat names no role to record
    return tuple(a.role for a in outcome.assignment if a.principal == principal and a.role in named)


def rejection_reason(vote: Vote) -> str:
    roles = f" ({', '.join(vote.roles)})" if vote.roles else ""
    return f"rejected by {vote.principal}{roles}" + (f": {vote.comment}" if vote.comment else "")


def cancel_reason(by: str, comment: str | None) -> str:
    return f"cancelled by {by}" + (f": {comment}" if comment else "")


def expiry_reason(request: ApprovalRequest) -> str:
    return (
        f"expired: not approved within {_span(request.policy.expires_after)} "
        f"(by {_text(request.expires_at)})"
    )


def _span(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
        f"{secs}s" if secs else "",
    ]
    return "".join(parts) or "0s"


def _vote_api(vote: Vote) -> dict[str, Any]:
    return {
        "principal": vote.principal,
        "verdict": vote.verdict.value,
        "roles": list(vote.roles),
        "at": _text(vote.at),
        "comment": vote.comment,
    }


_text = utc_text
