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

from remediator.domain.lifecycle import (
    Remediation,
    RemediationStatus,
    StepRecord,
    StepStatus,
    utc_text,
)
from remediator.domain.plans import ActionKind
from remediator.domain.signals import Signal, Source, Status
from remediator.ports import OutboxMessage, PendingMessage, StoredSignal

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


def remediation(row: Record, *, steps: Sequence[StepRecord] | None = None) -> Remediation:
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
    )


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
