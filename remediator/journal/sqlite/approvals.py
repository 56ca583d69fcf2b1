"""ApprovalStore on SQLite: votes, withdrawal, escalation, expiry and emergency reviews.

Every write runs on the writer thread in one transaction (BEGIN IMMEDIATE), reads the
remediation's status and request there, and changes nothing unless the status is still
the one the change starts from: an approval racing the expiry, or two approvers at
once, are ordered by the transaction, never both applied.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime

import orjson

from remediator.domain.approvals import (
    ApprovalState,
    ReviewStatus,
    Vote,
    VoteResult,
    approved_as,
    cancel_reason,
    default_request,
    expiry_reason,
    judge_vote,
    rejection_reason,
)
from remediator.domain.lifecycle import Remediation, RemediationStatus, check_transition, utc_text
from remediator.journal.sqlite.database import Role
from remediator.journal.sqlite.rows import (
    REMEDIATION_COLUMNS,
    approval_of,
    insert_outbox,
    insert_vote,
    json_text,
    parse_utc,
    remediation,
)
from remediator.ports import OutboxMessage, no_messages

WAITING = RemediationStatus.AWAITING_APPROVAL


def waiting_state(conn: sqlite3.Connection, remediation_id: str) -> ApprovalState | None:
    """The approval state of a plan still awaiting approval; None if it is not waiting."""
    row = conn.execute(
        "SELECT status, decision, created_at FROM remediations WHERE id = ?", (remediation_id,)
    ).fetchone()
    if row is None or row[0] != WAITING:
        return None
    state = approval_of(conn, remediation_id)
    if state is None:  # not reachable through migrations; kept safe all the same
        approvers = orjson.loads(row[1]).get("approvers") or ()
        state = ApprovalState(request=default_request(list(approvers), parse_utc(row[2])))
    return state


def end_waiting(
    conn: sqlite3.Connection,
    remediation_id: str,
    status: RemediationStatus,
    *,
    at: datetime,
    reason: str,
    old: RemediationStatus = WAITING,
) -> None:
    """A plan that never ran ends (rejected, cancelled, expired)."""
    check_transition(remediation_id, old, status)
    stamp = utc_text(at)
    conn.execute(
        "UPDATE remediations SET status = ?, reason = ?, finished_at = ?, updated_at = ?"
        " WHERE id = ?",
        (status, reason, stamp, stamp, remediation_id),
    )


class SqliteApprovals(Role):
    async def cast_vote(
        self,
        remediation_id: str,
        *,
        vote: Vote,
        outbox: Callable[[VoteResult], Sequence[OutboxMessage]] = no_messages,
    ) -> VoteResult:
        def write(conn: sqlite3.Connection) -> VoteResult:
            state = waiting_state(conn, remediation_id)
            if state is None:
                return VoteResult.NOT_WAITING
            result = judge_vote(state, vote)
            if result is VoteResult.EXPIRED:
                end_waiting(conn, remediation_id, RemediationStatus.EXPIRED, at=vote.at,
                            reason=expiry_reason(state.request))  # fmt: skip
            elif result.counted:
                insert_vote(conn, remediation_id, vote)
                after = ApprovalState(request=state.request, votes=(*state.votes, vote))
                if result is VoteResult.APPROVED:
                    _approve(conn, remediation_id, vote, approved_as(after, vote.principal))
                elif result is VoteResult.REJECTED:
                    end_waiting(conn, remediation_id, RemediationStatus.REJECTED, at=vote.at,
                                reason=rejection_reason(vote))  # fmt: skip
            if result.changes:
                insert_outbox(conn, outbox(result))
            return result

        voted: VoteResult = await self._db.transaction(write)
        return voted

    async def cancel_remediation(
        self,
        remediation_id: str,
        *,
        by: str,
        at: datetime,
        reason: str | None = None,
        outbox: Sequence[OutboxMessage] = (),
    ) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT status, claimed_at, finished_at FROM remediations WHERE id = ?",
                (remediation_id,),
            ).fetchone()
            if row is None or row[1] is not None or row[2] is not None:
                return False  # gone, claimed (running or rehearsing), or over
            old = RemediationStatus(row[0])
            if old not in (WAITING, RemediationStatus.PLANNED):
                return False
            end_waiting(conn, remediation_id, RemediationStatus.CANCELLED, at=at,
                        reason=cancel_reason(by, reason), old=old)  # fmt: skip
            insert_outbox(conn, outbox)
            return True

        cancelled: bool = await self._db.transaction(write)
        return cancelled

    async def due_approvals(self, *, now: datetime, limit: int) -> list[Remediation]:
        stamp = utc_text(now)

        def query(conn: sqlite3.Connection) -> list[Remediation]:
            rows = conn.execute(
                f"SELECT {REMEDIATION_COLUMNS} FROM remediations WHERE status = ? AND EXISTS ("
                " SELECT 1 FROM approval_requests a WHERE a.remediation_id = remediations.id"
                " AND (a.expires_at <= ? OR (a.escalated_at IS NULL AND a.response_due_at <= ?)))"
                " ORDER BY seq LIMIT ?",
                (WAITING, stamp, stamp, limit),
            ).fetchall()
            return [remediation(row, approval=approval_of(conn, row[1])) for row in rows]

        return await self._db.read(query)

    async def mark_escalated(
        self, remediation_id: str, *, at: datetime, outbox: Sequence[OutboxMessage] = ()
    ) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            if waiting_state(conn, remediation_id) is None:
                return False
            marked = conn.execute(
                "UPDATE approval_requests SET escalated_at = ?"
                " WHERE remediation_id = ? AND escalated_at IS NULL",
                (utc_text(at), remediation_id),
            ).rowcount
            if marked:
                insert_outbox(conn, outbox)
            return bool(marked)

        escalated: bool = await self._db.transaction(write)
        return escalated

    async def expire_approval(
        self, remediation_id: str, *, at: datetime, outbox: Sequence[OutboxMessage] = ()
    ) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            state = waiting_state(conn, remediation_id)
            if state is None or not state.request.expired(at):
                return False
            end_waiting(conn, remediation_id, RemediationStatus.EXPIRED, at=at,
                        reason=expiry_reason(state.request))  # fmt: skip
            insert_outbox(conn, outbox)
            return True

        expired: bool = await self._db.transaction(write)
        return expired

    async def close_review(
        self, remediation_id: str, *, by: str, at: datetime, comment: str | None = None
    ) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            state = approval_of(conn, remediation_id)
            if state is None or state.review_status() is not ReviewStatus.OWED:
                return False
            conn.execute(
                "UPDATE approval_requests SET review_closed_by = ?, review_closed_at = ?,"
                " review_comment = ? WHERE remediation_id = ?",
                (by, utc_text(at), comment, remediation_id),
            )
            return True

        closed: bool = await self._db.transaction(write)
        return closed


def _approve(
    conn: sqlite3.Connection, remediation_id: str, vote: Vote, roles: tuple[str, ...]
) -> None:
    """The last seat is filled: the plan is runnable, and records who completed it."""
    check_transition(remediation_id, WAITING, RemediationStatus.PLANNED)
    stamp = utc_text(vote.at)
    as_roles = json_text(list(roles)) if roles else None
    conn.execute(
        "UPDATE remediations SET status = ?, approved_by = ?, approved_at = ?, approved_as = ?,"
        " approval_comment = ?, updated_at = ? WHERE id = ?",
        (RemediationStatus.PLANNED, vote.principal, stamp, as_roles, vote.comment, stamp,
         remediation_id),
    )  # fmt: skip
