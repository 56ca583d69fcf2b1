"""Rollback requests and approvals over the API.

A person asks for a rollback (``POST /api/v1/rollback-requests``): the request is
checked against the catalog, the rules and trusted deploy history, journaled as a
manual signal, and decided by the decision engine like any signal; the answer carries
the remediation it opened (waiting for approval). Approvers approve or reject it
(``/approve``, ``/reject``), the requester or an admin withdraws it (``/cancel``), and
someone who took no part closes an emergency's review (``/review``). Who did it is
always the authenticated principal, never a field of the body; each answer is
journaled with the principal and the time, and applied by the journal in one
transaction with its notices (``ApprovalStore``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from aiohttp import web

from remediator.domain.approvals import ApprovalState, ReviewStatus, Verdict, Vote
from remediator.domain.approvals import VoteResult as R
from remediator.domain.auth import Principal, Role
from remediator.domain.errors import InvalidInput, TemporaryError
from remediator.domain.lifecycle import Remediation, RemediationStatus, remediation_id, utc_text
from remediator.domain.paging import shown
from remediator.domain.requests import RollbackRequest
from remediator.domain.rules import (
    HISTORY_KINDS,
    RulePack,
    deploy_record_from_signal,
    match_rule,
)
from remediator.domain.rules.decide import requested_rollback
from remediator.ingress.answers import error_response, json_response
from remediator.ingress.bodies import CommentBody, RollbackRequestBody, parse
from remediator.messages import approved_messages, status_messages, vote_messages
from remediator.metrics import Metrics
from remediator.ports import (
    ApprovalStore,
    OnJournaled,
    OutboxMessage,
    RemediationStore,
    SignalStore,
    StoredSignal,
    newly_stored,
)

log = logging.getLogger(__name__)

# How long a request's answer waits for the decision engine to decide it; past it the
# answer is 202 and the request is decided all the same.
DECISION_WAIT_SECONDS = 10.0
POLL_SECONDS = 0.05
# As many deploy events as the decision engine weighs.
HISTORY_EVENTS = 50
_IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9._:-]{1,200}")
AuthorizedHandler = Callable[[web.Request, Principal], Awaitable[web.StreamResponse]]
WAITING = RemediationStatus.AWAITING_APPROVAL


class DeployHistory(Protocol):
    """Journaled deploy events: what a request's target must be among."""

    async def service_events(
        self,
        *,
        service: str,
        kinds: Sequence[str],
        limit: int = 50,
        sources: Sequence[str] | None = None,
    ) -> list[StoredSignal]: ...


class ApprovalApiJournal(SignalStore, RemediationStore, ApprovalStore, DeployHistory, Protocol):
    """The journal roles requests and approvals use."""


class ApprovalApi:
    def __init__(
        self,
        *,
        journal: ApprovalApiJournal,
        pack: RulePack,
        metrics: Metrics,
        unavailable: Callable[[str], web.Response],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        notice_channels: Sequence[str] = (),
        outcome_channel: str | None = None,
        on_new_signals: OnJournaled | None = None,
        on_approved: Callable[[], None] | None = None,
        decision_wait_seconds: float = DECISION_WAIT_SECONDS,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        draining: Callable[[], bool] = lambda: False,
    ) -> None:
        self.journal = journal
        self.draining = draining
        self.pack = pack
        self.metrics = metrics
        self.unavailable = unavailable
        self.clock = clock
        self.notice_channels = tuple(notice_channels)
        self.outcome_channel = outcome_channel
        self.on_new_signals = on_new_signals
        self.on_approved = on_approved
        self.decision_wait_seconds = decision_wait_seconds
        self.sleep = sleep

    def routes(self) -> list[tuple[str, AuthorizedHandler]]:
        """(path, handler) of each POST route; every one asks for the operate role."""
        return [
            ("/api/v1/rollback-requests", self._journal_guard(self.create_request)),
            ("/api/v1/remediations/{id}/approve", self._journal_guard(self.approve)),
            ("/api/v1/remediations/{id}/reject", self._journal_guard(self.reject)),
            ("/api/v1/remediations/{id}/cancel", self._journal_guard(self.cancel)),
            ("/api/v1/remediations/{id}/review", self._journal_guard(self.review)),
        ]

    def _journal_guard(self, handler: AuthorizedHandler) -> AuthorizedHandler:
        async def guarded(request: web.Request, principal: Principal) -> web.StreamResponse:
            try:
                return await handler(request, principal)
            except TemporaryError as exc:
                return self.unavailable(f"journal unavailable: {exc}")

        return guarded

    # -- requests ------------------------------------------------------------------------
    async def create_request(self, request: web.Request, principal: Principal) -> web.Response:
        """Journal a rollback request as a manual signal; answer with the remediation the
        decision engine opened for it (201), or 202 if it is not decided in time."""
        if self.draining():  # the engine is stopping: it would not be decided here
            return self.unavailable("draining: shutting down, retry against another replica")
        document = _json_object(await request.read(), example='{"service": "checkout", ...}')
        wanted = self._parse_request(document)
        retry_key = _idempotency_key(request)
        signal = wanted.signal(
            requester=principal.name,
            received_at=self.clock(),
            idempotency=retry_key or secrets.token_hex(16),
        )
        rid = remediation_id(signal.id)
        if retry_key is not None:
            earlier = await self.journal.get_remediation(rid)
            if earlier is not None:  # a retry of a request already decided
                return json_response(earlier.to_api())
        if match_rule(signal, pack=self.pack) is None:
            raise InvalidInput(
                f"no enabled rule handles a manual rollback for {shown(wanted.scenario)} "
                "(the manual-* rules of rules/remediation.yaml)",
                where="scenario",
            )
        if wanted.target is not None:
            await self._check_target(wanted.service, wanted.target)
        waiting = await self._waiting_request(wanted.service)
        if waiting is not None:
            return error_response(
                409,
                f"service: a rollback request for {shown(wanted.service)} already waits for "
                f"approval ({waiting}); approve, reject or cancel it first",
            )
        [result] = await self.journal.record_signals([signal])
        if not result.duplicate and self.on_new_signals is not None:
            self.on_new_signals(newly_stored([signal], [result]))
        item = await self._decided(rid)
        status = "deciding" if item is None else item.status.value
        self.metrics.rollback_requests.labels(status=status).inc()
        log.warning("rollback of %s requested by %s (%s%s): %s", wanted.service, principal.name,
                    wanted.scenario, ", emergency" if wanted.emergency else "", rid)  # fmt: skip
        if item is None:
            return json_response({"id": rid, "signal_id": signal.id, "status": None}, status=202)
        return json_response(item.to_api(), status=200 if result.duplicate else 201)

    def _parse_request(self, document: Mapping[str, Any]) -> RollbackRequest:
        for key in document:
            if key in ("requester", "by"):
                raise InvalidInput(
                    "not accepted: the requester is the principal of the credential you "
                    "send, never a field of the body",
                    where=key,
                )
        body = parse(RollbackRequestBody, document)
        spec = self.pack.services.get(body.service)
        if spec is None:
            raise InvalidInput(
                f"{shown(body.service)} is not a service of the catalog", where="service"
            )
        outside = self.pack.out_of_scope(body.service, None)
        if outside is not None:
            raise InvalidInput(outside, where="service")
        return RollbackRequest(service=body.service, namespace=spec.namespace,
                               scenario=body.scenario, reason=body.reason, target=body.target,
                               emergency=body.emergency)  # fmt: skip

    async def _check_target(self, service: str, target: str) -> None:
        """The target must be a deploy trusted history records before the current one."""
        defaults = self.pack.defaults
        events = await self.journal.service_events(
            service=service, kinds=HISTORY_KINDS, limit=HISTORY_EVENTS,
            sources=[source.value for source in defaults.trusted_history_sources],
        )  # fmt: skip
        deploys = [
            d for d in (deploy_record_from_signal(e.signal, defaults=defaults) for e in events) if d
        ]
        deploys.sort(key=lambda deploy: deploy.finished_at, reverse=True)
        found = requested_rollback(deploys, target, spec=self.pack.services[service],
                                   service=service)  # fmt: skip
        if isinstance(found, str):
            raise InvalidInput(found, where="target")

    async def _waiting_request(self, service: str) -> str | None:
        """A person's request for the service still waiting for approval, if any."""
        page = await self.journal.list_remediations(service=service, status=WAITING, limit=50)
        return next((item.id for item in page.items if item.manual), None)

    async def _decided(self, rid: str) -> Remediation | None:
        polls = max(1, int(self.decision_wait_seconds / POLL_SECONDS))
        for poll in range(polls + 1):
            item = await self.journal.get_remediation(rid)
            if item is not None or poll == polls:
                return item
            await self.sleep(POLL_SECONDS)
        return None  # not reached: the loop returns on its last poll

    # -- approve and reject ----------------------------------------------------------------
    async def approve(self, request: web.Request, principal: Principal) -> web.Response:
        """Approve as the principal: it fills one seat of the plan's approval (a distinct
        principal per approver role); once every seat is filled the plan runs."""
        return await self._vote(request, principal, Verdict.APPROVE)

    async def reject(self, request: web.Request, principal: Principal) -> web.Response:
        """Reject as the principal: the plan ends ``rejected`` and never runs."""
        return await self._vote(request, principal, Verdict.REJECT)

    async def _vote(
        self, request: web.Request, principal: Principal, verdict: Verdict
    ) -> web.Response:
        comment = _comment(await request.read())
        answer = await self.vote(request.match_info["id"], principal, verdict, comment=comment)
        if answer.refusal is not None:
            return _refused(answer.refusal)
        assert answer.remediation is not None
        return json_response(answer.remediation.to_api())

    async def vote(
        self,
        rid: str,
        principal: Principal,
        verdict: Verdict,
        *,
        comment: str | None = None,
        via: str = "the API",
    ) -> VoteAnswer:
        """Apply one principal's answer by the rules every channel shares (the API, a
        Slack button): a distinct principal per approver role, never the requester, once
        each, and only while the plan waits and has not expired."""
        item = await self.journal.get_remediation(rid)
        if item is None:
            return VoteAnswer(refusal=_no_such(rid))
        state = item.approval
        if state is None or item.status is not WAITING:
            return VoteAnswer(refusal=_not_waiting(item))
        refusal = _refusal(state, principal, verdict, rid)
        if refusal is not None:
            self.metrics.approval_votes.labels(verdict=verdict.value, result="refused").inc()
            return VoteAnswer(refusal=refusal)
        now = self.clock()
        policy = state.request.policy
        vote = Vote(principal=principal.name, verdict=verdict, at=now, comment=comment,
                    roles=policy.relevant_roles(principal.approver_roles))  # fmt: skip
        result = await self.journal.cast_vote(
            rid, vote=vote, outbox=lambda result: self._vote_messages(item, result, vote)
        )
        self.metrics.approval_votes.labels(verdict=verdict.value, result=result.value).inc()
        after = await self.journal.get_remediation(rid)
        refused = _vote_refused(result, rid, state, principal, after)
        if refused is not None:
            return VoteAnswer(refusal=refused, result=result)
        assert after is not None  # a counted vote leaves the remediation there
        log.warning("remediation %s %s by %s (as %s) via %s: %s", rid, verdict.value + "d",
                    principal.name, ", ".join(vote.roles) or "any approver", via,
                    result.value)  # fmt: skip
        if result is R.APPROVED and self.on_approved is not None:
            self.on_approved()
        return VoteAnswer(remediation=after, result=result)

    def _vote_messages(self, item: Remediation, result: R, vote: Vote) -> Sequence[OutboxMessage]:
        at = vote.at
        if result is R.RECORDED:
            return vote_messages(item, principal=vote.principal, at=at,
                                 notice_channels=self.notice_channels)  # fmt: skip
        if result is R.APPROVED:
            return approved_messages(item, at=at, notice_channels=self.notice_channels)
        ended = {R.REJECTED: RemediationStatus.REJECTED, R.EXPIRED: RemediationStatus.EXPIRED}
        if result in ended:
            return status_messages(
                item, status=ended[result], at=at, notice_channels=self.notice_channels,
                outcome_channel=self.outcome_channel,
            )  # fmt: skip
        return ()

    # -- cancel and review --------------------------------------------------------------
    async def cancel(self, request: web.Request, principal: Principal) -> web.Response:
        """Withdraw a plan that waits for approval or has not started: the requester may,
        and an admin; it ends ``cancelled`` and never runs."""
        rid = request.match_info["id"]
        comment = _comment(await request.read())
        item = await self.journal.get_remediation(rid)
        if item is None:
            return _refused(_no_such(rid))
        requester = item.approval.request.requester if item.approval is not None else None
        if principal.name != requester and Role.ADMIN not in principal.roles:
            asked = f"the requester ({requester})" if requester else "(an alert's plan) no one"
            return error_response(
                403, f"forbidden: {asked} or an admin may cancel {rid} "
                f"(principal '{principal.name}' has: {principal.roles_text()})",
            )  # fmt: skip
        now = self.clock()
        messages = status_messages(
            item, status=RemediationStatus.CANCELLED, at=now,
            notice_channels=self.notice_channels, outcome_channel=self.outcome_channel,
        )  # fmt: skip
        cancelled = await self.journal.cancel_remediation(
            rid, by=principal.name, at=now, reason=comment, outbox=messages
        )
        after = await self.journal.get_remediation(rid)
        if not cancelled or after is None:
            status = after.status.value if after else "gone"
            return error_response(
                409, f"id: {rid} is {status}; only a plan awaiting approval, or planned and "
                "not yet started, can be cancelled",
            )  # fmt: skip
        log.warning("remediation %s cancelled by %s via the API", rid, principal.name)
        return json_response(after.to_api())

    async def review(self, request: web.Request, principal: Principal) -> web.Response:
        """Close the review an approved emergency owes; by someone who neither asked for
        it nor approved it."""
        rid = request.match_info["id"]
        comment = _comment(await request.read())
        item = await self.journal.get_remediation(rid)
        if item is None:
            return _refused(_no_such(rid))
        state = item.approval
        if state is None or not state.request.policy.emergency:
            return error_response(409, f"id: {rid} is not an emergency request; no review is owed")
        involved = {state.request.requester, *(v.principal for v in state.votes)}
        if principal.name in involved:
            return error_response(
                409, f"id: the review of {rid} is for someone who neither requested nor "
                f"approved it ('{principal.name}' did)",
            )  # fmt: skip
        status = state.review_status()
        if status is not ReviewStatus.OWED:
            return error_response(409, _no_review(rid, state, status))
        if not await self.journal.close_review(
            rid, by=principal.name, at=self.clock(), comment=comment
        ):
            return error_response(409, f"id: the review of {rid} was closed meanwhile")
        after = await self.journal.get_remediation(rid)
        assert after is not None
        log.warning("emergency review of %s closed by %s via the API", rid, principal.name)
        return json_response(after.to_api())


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an answer was not counted: the HTTP status and a message naming the field."""

    status: int
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class VoteAnswer:
    """What became of one answer: the remediation after it, or why it was refused."""

    remediation: Remediation | None = None
    refusal: Refusal | None = None
    result: R | None = None


def _refusal(
    state: ApprovalState, principal: Principal, verdict: Verdict, rid: str
) -> Refusal | None:
    """Why the principal may not answer this request, before anything is written."""
    request = state.request
    if principal.name == request.requester:
        instead = "" if verdict is Verdict.APPROVE else "; cancel it instead"
        return Refusal(
            409, f"id: {rid} was requested by '{principal.name}': someone else must "
            f"{verdict.value} it (four eyes){instead}",
        )  # fmt: skip
    if not request.policy.may_vote(principal.approver_roles):
        named = ", ".join(f"'{role}'" for role in request.policy.roles)
        return Refusal(
            403, f"forbidden: {'approving' if verdict is Verdict.APPROVE else 'rejecting'} "
            f"needs one of the approver roles {named} (principal '{principal.name}' has: "
            f"{principal.approver_roles_text()})",
        )  # fmt: skip
    earlier = state.voted(principal.name)
    if earlier is not None:
        return _already(rid, earlier)
    return None


def _vote_refused(
    result: R, rid: str, state: ApprovalState, principal: Principal, after: Remediation | None
) -> Refusal | None:
    """The answer to a vote the journal did not count (someone was first, or too late)."""
    if result.counted:
        return None
    if result is R.EXPIRED:
        return Refusal(
            409, f"id: {rid} expired at {utc_text(state.request.expires_at)} (not approved "
            "in time); it will not run",
        )  # fmt: skip
    if result is R.ALREADY_VOTED and after is not None and after.approval is not None:
        earlier = after.approval.voted(principal.name)
        if earlier is not None:
            return _already(rid, earlier)
    if result is R.NOT_AN_APPROVER:
        return Refusal(403, f"forbidden: principal '{principal.name}' holds none of "
                              "the approver roles this plan needs")  # fmt: skip
    if after is None:
        return _no_such(rid)
    return _not_waiting(after)


def _already(rid: str, earlier: Vote) -> Refusal:
    did = "approved" if earlier.verdict is Verdict.APPROVE else "rejected"
    return Refusal(
        409, f"id: '{earlier.principal}' {did} {rid} already at {utc_text(earlier.at)}; a "
        "principal counts once",
    )  # fmt: skip


def _no_review(rid: str, state: ApprovalState, status: ReviewStatus) -> str:
    review = state.request.review
    if status is ReviewStatus.CLOSED and review is not None:
        return (
            f"id: the review of {rid} was closed by '{review.closed_by}' at "
            f"{utc_text(review.closed_at)}"
        )
    return f"id: {rid} was never approved; no review is owed"


def _no_such(rid: str) -> Refusal:
    return Refusal(404, f"id: no remediation {shown(rid)}")


def _not_waiting(item: Remediation) -> Refusal:
    return Refusal(409, f"id: {item.id} is {item.status.value}, not awaiting approval")


# -- bodies ---------------------------------------------------------------------------


def _json_object(body: bytes, *, example: str) -> dict[str, Any]:
    try:
        document = orjson.loads(body or b"{}")
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"not valid JSON ({exc})", where="body") from None
    if not isinstance(document, dict):
        raise InvalidInput(f"expected a JSON object such as {example}", where="body")
    return document


def _comment(body: bytes) -> str | None:
    """The optional comment of an approve, reject, cancel or review body.

    Who acts is never read from the body: a ``by`` field is refused, so that a client
    relying on it learns that it is not what gets recorded.
    """
    document = _json_object(body, example='{"comment": "why"}')
    if "by" in document:
        raise InvalidInput(
            "not accepted: who acts is the principal of the credential you send, never a "
            "field of the body",
            where="by",
        )
    return parse(CommentBody, document).comment or None


def _idempotency_key(request: web.Request) -> str | None:
    """The client's Idempotency-Key: a retried request with the same key is the same
    request (answered with what the first one became)."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if _IDEMPOTENCY_KEY.fullmatch(key) is None:
        raise InvalidInput(
            "1 to 200 letters, digits and . _ : - (e.g. a UUID)", where="Idempotency-Key"
        )
    return key


def _refused(refusal: Refusal) -> web.Response:
    return error_response(refusal.status, refusal.message)
