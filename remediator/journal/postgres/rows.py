"""Rows to models and back: how the journal's records are stored in PostgreSQL
(times as timestamptz, JSON as jsonb).

PostgreSQL text cannot hold NUL (U+0000), in a text column or inside jsonb; SQLite
can. A NUL in what a signal carries (an alert label, say) is stored as U+FFFD, so the
signal is journaled rather than refused; its id, derived from the key as received,
is unchanged, so idempotency holds.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import orjson
from asyncpg import Record

from remediator.domain.approvals import (
    ApprovalPolicy,
    ApprovalRequest,
    ApprovalState,
    Review,
    Verdict,
    Vote,
    default_request,
)
from remediator.domain.lifecycle import (
    Remediation,
    RemediationStatus,
    StepRecord,
    StepStatus,
    utc_text,
)
from remediator.domain.plans import ActionKind
from remediator.domain.signals import Signal, Source, Status
from remediator.ports import NewRemediation, OutboxMessage, PendingMessage, StoredSignal

NUL = "\x00"
REPLACEMENT = "\ufffd"
# An escaped NUL in JSON text, not preceded by an escaped backslash ("\\u0000" is the
# six characters \u0000 themselves, and stays).
_JSON_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def json_text(value: Any) -> str:
    text = orjson.dumps(value).decode()
    if "\\u0000" in text:
        text = _JSON_NUL.sub(r"\1\\ufffd", text)
    return text


def pg_text(value: str | None) -> str | None:
    if value is None or NUL not in value:
        return value
    return value.replace(NUL, REPLACEMENT)


# -- signals ---------------------------------------------------------------------------
SIGNAL_COLUMNS = (
    "seq, id, key, source, kind, status, service, namespace, starts_at, ends_at, received_at, body"
)


def signal_body(signal: Signal) -> dict[str, Any]:
    body: dict[str, Any] = {
        "labels": signal.labels,
        "annotations": signal.annotations,
        "raw": signal.raw,
    }
    if signal.received_by is not None:
        body["received_by"] = signal.received_by  # the principal that sent it
    return body


def stored_signal(row: Record) -> StoredSignal:
    body = row["body"]
    return StoredSignal(
        seq=row["seq"],
        signal=Signal(
            id=row["id"],
            key=row["key"],
            source=Source(row["source"]),
            kind=row["kind"],
            status=Status(row["status"]),
            service=row["service"],
            namespace=row["namespace"],
            labels=body["labels"],
            annotations=body["annotations"],
            starts_at=row["starts_at"],
            ends_at=row["ends_at"],
            received_at=row["received_at"],
            raw=body["raw"],
            received_by=body.get("received_by"),
        ),
    )


def signal_item(row: Record) -> dict[str, Any]:
    """A signal as the API lists it (times as utc_text)."""
    body = row["body"]
    starts_at, ends_at = row["starts_at"], row["ends_at"]
    return {
        "id": row["id"],
        "source": row["source"],
        "kind": row["kind"],
        "status": row["status"],
        "service": row["service"],
        "namespace": row["namespace"],
        "routable": row["service"] is not None,
        "labels": body["labels"],
        "annotations": body["annotations"],
        "starts_at": None if starts_at is None else utc_text(starts_at),
        "ends_at": None if ends_at is None else utc_text(ends_at),
        "received_at": utc_text(row["received_at"]),
        "received_by": body.get("received_by"),
    }


# -- remediations ----------------------------------------------------------------------
REMEDIATION_COLUMNS = (
    "seq, id, signal_id, service, namespace, rule, action, status, reason, manual,"
    " automated, created_at, updated_at, explanation, claimed_by, claimed_at, finished_at,"
    " approved_by, approved_at, approved_as, approval_comment"
)
WITH_DECISION = REMEDIATION_COLUMNS + ", decision"


def remediation(
    row: Record,
    *,
    steps: Sequence[StepRecord] | None = None,
    approval: ApprovalState | None = None,
) -> Remediation:
    """``decision`` is loaded when the row has it; ``steps`` when given."""
    action = row["action"]
    approved_as = row["approved_as"]
    return Remediation(
        id=row["id"],
        signal_id=row["signal_id"],
        service=row["service"],
        namespace=row["namespace"],
        rule=row["rule"],
        action=None if action is None else ActionKind(action),
        status=RemediationStatus(row["status"]),
        reason=row["reason"],
        manual=row["manual"],
        automated=row["automated"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        explanation=row["explanation"],
        claimed_by=row["claimed_by"],
        claimed_at=row["claimed_at"],
        finished_at=row["finished_at"],
        approved_by=row["approved_by"],
        approved_at=row["approved_at"],
        approved_as=None if approved_as is None else tuple(approved_as),
        approval_comment=row["approval_comment"],
        decision=row.get("decision"),  # absent from list queries
        steps=None if steps is None else tuple(steps),
        approval=approval,
    )


# -- approvals -------------------------------------------------------------------------
REQUEST_COLUMNS = (
    "remediation_id, requester, scenario, reason, target, policy, requested_at, escalated_at,"
    " review_closed_by, review_closed_at, review_comment"
)
VOTE_COLUMNS = "remediation_id, principal, verdict, roles, at, comment"
INSERT_REQUEST = (
    "INSERT INTO approval_requests (remediation_id, requester, scenario, reason, target, policy,"
    " requested_at, response_due_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    " ON CONFLICT (remediation_id) DO NOTHING"
)


def request_params(remediation_id: str, request: ApprovalRequest) -> tuple[Any, ...]:
    return (
        remediation_id, pg_text(request.requester), pg_text(request.scenario),
        pg_text(request.reason), pg_text(request.target), request.policy.model_dump(mode="json"),
        request.requested_at, request.response_due_at, request.expires_at,
    )  # fmt: skip


def request_for(remediation: NewRemediation) -> ApprovalRequest:
    """A new plan's request; without one, the plan's approvers and the default times."""
    if remediation.approval is not None:
        return remediation.approval
    approvers = remediation.decision.get("approvers") or ()
    return default_request(list(approvers), remediation.created_at)


def approval_state(request: Record, votes: Sequence[Record]) -> ApprovalState:
    closed_by = request["review_closed_by"]
    return ApprovalState(
        request=ApprovalRequest(
            policy=ApprovalPolicy.model_validate(request["policy"]),
            requested_at=request["requested_at"],
            requester=request["requester"],
            scenario=request["scenario"],
            reason=request["reason"],
            target=request["target"],
            escalated_at=request["escalated_at"],
            review=None
            if closed_by is None
            else Review(closed_by=closed_by, closed_at=request["review_closed_at"],
                        comment=request["review_comment"]),
        ),
        votes=tuple(
            Vote(principal=v["principal"], verdict=Verdict(v["verdict"]), roles=tuple(v["roles"]),
                 at=v["at"], comment=v["comment"])
            for v in votes
        ),
    )  # fmt: skip


STEP_COLUMNS = "remediation_id, idx, kind, status, started_at, finished_at, detail"


def step(row: Record) -> StepRecord:
    return StepRecord(
        idx=row["idx"],
        kind=row["kind"],
        status=StepStatus(row["status"]),
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        detail=row["detail"],
    )


# -- outbox ----------------------------------------------------------------------------
OUTBOX_COLUMNS = "seq, id, channel, key, payload, created_at, attempts"


def pending_message(row: Record) -> PendingMessage:
    return PendingMessage(
        seq=row["seq"],
        message=OutboxMessage(
            id=row["id"],
            channel=row["channel"],
            key=row["key"],
            payload=row["payload"],
            created_at=row["created_at"],
        ),
        attempts=row["attempts"],
        maybe_sent=row["maybe_sent"],
    )


def outbox_params(messages: Sequence[OutboxMessage]) -> tuple[list[Any], ...]:
    """Columns of messages as arrays, for one INSERT ... SELECT FROM unnest(...)."""
    return (
        [m.id for m in messages],
        [m.channel for m in messages],
        [pg_text(m.key) for m in messages],
        [json_text(m.payload) for m in messages],
        [m.created_at for m in messages],
    )


INSERT_OUTBOX = (
    "INSERT INTO outbox (id, channel, key, payload, created_at)"
    " SELECT id, channel, key, payload::jsonb, created_at"
    " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])"
    " WITH ORDINALITY AS m (id, channel, key, payload, created_at, ord)"
    " ORDER BY ord ON CONFLICT (id) DO NOTHING"
)
