"""Rows to models and back: how signals, remediations, steps and outbox messages are
stored in SQLite (times as ``utc_text``, JSON as TEXT)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson

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

T = TypeVar("T")


# The last text parsed, and its time: rows read together share instants (the signals of
# one request share their receipt time, a batch's decisions their decision time).
_last_parsed: tuple[str, datetime | None] = ("", None)


def parse_utc(text: str) -> datetime:
    global _last_parsed
    last, value = _last_parsed  # one read: another thread may replace it meanwhile
    if text == last and value is not None:
        return value
    value = datetime.fromisoformat(text.removesuffix("Z")).replace(tzinfo=UTC)
    _last_parsed = (text, value)
    return value


def parse_utc_or_none(text: str | None) -> datetime | None:
    return None if text is None else parse_utc(text)


def text_or_none(value: datetime | None) -> str | None:
    return None if value is None else utc_text(value)


def json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


# -- signals ---------------------------------------------------------------------------
SIGNAL_COLUMNS = (
    "seq, id, key, source, kind, status, service, namespace, starts_at, ends_at, received_at, body"
)
INSERT_SIGNAL = (
    "INSERT INTO signals (id, key, source, kind, status, service, namespace, starts_at,"
    " ends_at, received_at, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def signal_row(signal: Signal, received_at: str) -> tuple[Any, ...]:
    """The INSERT_SIGNAL parameters of a signal (``received_at`` already as text)."""
    return (
        signal.id,
        signal.key,
        signal.source.value,
        signal.kind,
        signal.status.value,
        signal.service,
        signal.namespace,
        text_or_none(signal.starts_at),
        text_or_none(signal.ends_at),
        received_at,
        json_text(_signal_body(signal)),
    )


def _signal_body(signal: Signal) -> dict[str, Any]:
    body: dict[str, Any] = {
        "labels": signal.labels,
        "annotations": signal.annotations,
        "raw": signal.raw,
    }
    if signal.received_by is not None:
        body["received_by"] = signal.received_by  # the principal that sent it
    return body


def stored_signal(row: tuple[Any, ...]) -> StoredSignal:
    """A row of SIGNAL_COLUMNS as the engine reads it."""
    (seq, sid, key, source, kind, status, service, namespace, starts_at, ends_at, received_at,
     body) = row  # fmt: skip
    doc = orjson.loads(body)
    return StoredSignal(
        seq=seq,
        signal=Signal(
            id=sid,
            key=key,
            source=Source(source),
            kind=kind,
            status=Status(status),
            service=service,
            namespace=namespace,
            labels=doc["labels"],
            annotations=doc["annotations"],
            starts_at=parse_utc_or_none(starts_at),
            ends_at=parse_utc_or_none(ends_at),
            received_at=parse_utc(received_at),
            raw=doc["raw"],
            received_by=doc.get("received_by"),
        ),
    )


def signal_item(row: tuple[Any, ...]) -> dict[str, Any]:
    """A row of SIGNAL_COLUMNS as the API lists it (no key, no raw body)."""
    (_, sid, _key, source, kind, status, service, namespace, starts_at, ends_at, received_at,
     body) = row  # fmt: skip
    doc = orjson.loads(body)
    return {
        "id": sid,
        "source": source,
        "kind": kind,
        "status": status,
        "service": service,
        "namespace": namespace,
        "routable": service is not None,
        "labels": doc["labels"],
        "annotations": doc["annotations"],
        "starts_at": starts_at,
        "ends_at": ends_at,
        "received_at": received_at,
        "received_by": doc.get("received_by"),
    }


# -- remediations ----------------------------------------------------------------------
REMEDIATION_COLUMNS = (
    "seq, id, signal_id, service, namespace, rule, action, status, reason, manual, automated,"
    " created_at, updated_at, decision, explanation, claimed_by, claimed_at, finished_at,"
    " approved_by, approved_at, approved_as, approval_comment"
)


def remediation(
    row: tuple[Any, ...],
    *,
    with_decision: bool = False,
    steps: Sequence[StepRecord] | None = None,
    approval: ApprovalState | None = None,
) -> Remediation:
    """A row of REMEDIATION_COLUMNS; the decision only when asked for (list views
    leave it out), the steps when given."""
    (_, rid, signal_id, service, namespace, rule, action, status, reason, manual, automated,
     created_at, updated_at, decision, explanation, claimed_by, claimed_at, finished_at,
     approved_by, approved_at, approved_as, approval_comment) = row  # fmt: skip
    return Remediation(
        id=rid,
        signal_id=signal_id,
        service=service,
        namespace=namespace,
        rule=rule,
        action=None if action is None else ActionKind(action),
        status=RemediationStatus(status),
        reason=reason,
        manual=bool(manual),
        automated=bool(automated),
        created_at=parse_utc(created_at),
        updated_at=parse_utc(updated_at),
        explanation=explanation,
        claimed_by=claimed_by,
        claimed_at=parse_utc_or_none(claimed_at),
        finished_at=parse_utc_or_none(finished_at),
        approved_by=approved_by,
        approved_at=parse_utc_or_none(approved_at),
        approved_as=tuple(orjson.loads(approved_as)) if approved_as else None,
        approval_comment=approval_comment,
        decision=orjson.loads(decision) if with_decision else None,
        steps=None if steps is None else tuple(steps),
        approval=approval,
    )


def steps_of(conn: sqlite3.Connection, remediation_id: str) -> list[StepRecord]:
    rows = conn.execute(
        "SELECT idx, kind, status, started_at, finished_at, detail FROM remediation_steps"
        " WHERE remediation_id = ? ORDER BY idx",
        (remediation_id,),
    ).fetchall()
    return [
        StepRecord(
            idx=idx,
            kind=kind,
            status=StepStatus(status),
            started_at=parse_utc(started_at),
            finished_at=parse_utc_or_none(finished_at),
            detail=orjson.loads(detail),
        )
        for idx, kind, status, started_at, finished_at, detail in rows
    ]


def full_remediation(conn: sqlite3.Connection, row: tuple[Any, ...]) -> Remediation:
    """A remediation with its decision, steps and approval state."""
    return remediation(
        row, with_decision=True, steps=steps_of(conn, row[1]), approval=approval_of(conn, row[1])
    )


# -- approvals -------------------------------------------------------------------------
def insert_approval_request(
    conn: sqlite3.Connection, remediation_id: str, request: ApprovalRequest
) -> None:
    """The request of a plan awaiting approval (kept if one is there already)."""
    conn.execute(
        "INSERT OR IGNORE INTO approval_requests (remediation_id, requester, scenario, reason,"
        " target, policy, requested_at, response_due_at, expires_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            remediation_id, request.requester, request.scenario, request.reason, request.target,
            request.policy.model_dump_json(), utc_text(request.requested_at),
            utc_text(request.response_due_at), utc_text(request.expires_at),
        ),
    )  # fmt: skip


def request_for(remediation: NewRemediation) -> ApprovalRequest:
    """A new plan's request; without one, the plan's approvers and the default times."""
    if remediation.approval is not None:
        return remediation.approval
    approvers = remediation.decision.get("approvers") or ()
    return default_request(list(approvers), remediation.created_at)


def approval_of(conn: sqlite3.Connection, remediation_id: str) -> ApprovalState | None:
    """The request and votes of a plan that needed approval; None for any other."""
    row = conn.execute(
        "SELECT requester, scenario, reason, target, policy, requested_at, escalated_at,"
        " review_closed_by, review_closed_at, review_comment FROM approval_requests"
        " WHERE remediation_id = ?",
        (remediation_id,),
    ).fetchone()
    if row is None:
        return None
    (requester, scenario, reason, target, policy, requested_at, escalated_at, closed_by,
     closed_at, comment) = row  # fmt: skip
    votes = conn.execute(
        "SELECT principal, verdict, roles, at, comment FROM approval_votes"
        " WHERE remediation_id = ? ORDER BY at, principal",
        (remediation_id,),
    ).fetchall()
    return ApprovalState(
        request=ApprovalRequest(
            policy=ApprovalPolicy.model_validate_json(policy),
            requested_at=parse_utc(requested_at),
            requester=requester,
            scenario=scenario,
            reason=reason,
            target=target,
            escalated_at=parse_utc_or_none(escalated_at),
            review=None
            if closed_by is None
            else Review(closed_by=closed_by, closed_at=parse_utc(closed_at), comment=comment),
        ),
        votes=tuple(
            Vote(principal=principal, verdict=Verdict(verdict), roles=tuple(orjson.loads(roles)),
                 at=parse_utc(at), comment=vote_comment)
            for principal, verdict, roles, at, vote_comment in votes
        ),
    )  # fmt: skip


def insert_vote(conn: sqlite3.Connection, remediation_id: str, vote: Vote) -> None:
    conn.execute(
        "INSERT INTO approval_votes (remediation_id, principal, verdict, roles, at, comment)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (remediation_id, vote.principal, vote.verdict.value, json_text(list(vote.roles)),
         utc_text(vote.at), vote.comment),
    )  # fmt: skip


# -- outbox ----------------------------------------------------------------------------
def insert_outbox(conn: sqlite3.Connection, messages: Sequence[OutboxMessage]) -> None:
    """Add messages in the caller's transaction; an id already present is ignored."""
    conn.executemany(
        "INSERT OR IGNORE INTO outbox (id, channel, key, payload, created_at)"
        " VALUES (?, ?, ?, ?, ?)",
        [(m.id, m.channel, m.key, json_text(m.payload), utc_text(m.created_at)) for m in messages],
    )


# maybe_sent: a relay leased it and never marked it published, or an attempt failed
PENDING_COLUMNS = (
    "seq, id, channel, key, payload, created_at, attempts,"
    " (leased_by IS NOT NULL OR attempts > 0) AS maybe_sent"
)


def pending_message(row: tuple[Any, ...]) -> PendingMessage:
    seq, mid, channel, key, payload, created_at, attempts, maybe_sent = row
    return PendingMessage(
        seq=seq,
        message=OutboxMessage(
            id=mid,
            channel=channel,
            key=key,
            payload=orjson.loads(payload),
            created_at=parse_utc(created_at),
        ),
        attempts=attempts,
        maybe_sent=bool(maybe_sent),
    )


# -- pages -----------------------------------------------------------------------------
def page_of(
    rows: Sequence[tuple[Any, ...]], limit: int, item: Callable[[tuple[Any, ...]], T]
) -> tuple[list[T], list[str], str | None]:
    """Items of a ``limit + 1`` query (newest first, seq in the first column), the
    cursor continuing after each item (its seq), and the page's ``next`` cursor."""
    kept = rows[:limit]
    cursors = [str(row[0]) for row in kept]
    return [item(row) for row in kept], cursors, cursors[-1] if len(rows) > limit else None


def newest_first_where(
    filters: Sequence[tuple[str, Any]], before: int | None
) -> tuple[str, list[Any]]:
    """A WHERE clause of ``column = ?`` for each filter given (not None), and a seq cut."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in filters:
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if before is not None:
        clauses.append("seq < ?")
        params.append(before)
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), params
