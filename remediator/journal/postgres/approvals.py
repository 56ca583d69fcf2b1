"""ApprovalStore on PostgreSQL: votes, withdrawal, escalation, expiry and emergency reviews.

Every write locks the remediation's row (``FOR UPDATE``) and reads its status and
request in the same transaction: an approval racing the expiry on another replica, or
two approvers at once, are ordered by the row lock, and the second sees what the first
did. A vote's row is keyed by (remediation, principal), so the same principal never
counts twice, whichever replica it reached.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

import asyncpg

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
from remediator.domain.lifecycle import Remediation, RemediationStatus, check_transition
from remediator.journal.postgres.database import Database
from remediator.journal.postgres.remediations import approvals_of
from remediator.journal.postgres.rows import (
    INSERT_OUTBOX,
    REMEDIATION_COLUMNS,
    outbox_params,
    pg_text,
    remediation,
)
from remediator.ports import OutboxMessage, no_messages

WAITING = RemediationStatus.AWAITING_APPROVAL


async def _waiting_state(conn: asyncpg.Connection, remediation_id: str) -> ApprovalState | None:
    """Lock the remediation; its approval state if it still awaits approval, else None."""
    row = await conn.fetchrow(
        "SELECT status, decision, created_at FROM remediations WHERE id = $1 FOR UPDATE",
        remediation_id,
    )
    if row is None or row["status"] != WAITING.value:
        return None
    state = (await approvals_of(conn, [remediation_id])).get(remediation_id)
    if state is None:  # not reachable through migrations; kept safe all the same
        approvers = row["decision"].get("approvers") or ()
        state = ApprovalState(request=default_request(list(approvers), row["created_at"]))
    return state


async def _end_waiting(
    conn: asyncpg.Connection,
    remediation_id: str,
    status: RemediationStatus,
    *,
    at: datetime,
    reason: str,
    old: RemediationStatus = WAITING,
) -> None:
    """A plan that never ran ends (rejected, cancelled, expired)."""
    check_transition(remediation_id, old, status)
    await conn.execute(
        "UPDATE remediations SET status = $2, reason = $3, finished_at = $4, updated_at = $4"
        " WHERE id = $1",
        remediation_id,
        status.value,
        pg_text(reason),
        at,
    )


async def _enqueue(conn: asyncpg.Connection, outbox: Sequence[OutboxMessage]) -> None:
    if outbox:
        await conn.execute(INSERT_OUTBOX, *outbox_params(outbox))


class PgApprovalStore:
    _db: Database

    async def cast_vote(
        self,
        remediation_id: str,
        *,
        vote: Vote,
        outbox: Callable[[VoteResult], Sequence[OutboxMessage]] = no_messages,
    ) -> VoteResult:
        async def write(conn: asyncpg.Connection) -> VoteResult:
            state = await _waiting_state(conn, remediation_id)
            if state is None:
                return VoteResult.NOT_WAITING
            result = judge_vote(state, vote)
            if result is VoteResult.EXPIRED:
                await _end_waiting(conn, remediation_id, RemediationStatus.EXPIRED, at=vote.at,
                                   reason=expiry_reason(state.request))  # fmt: skip
            elif result.counted:
                await conn.execute(
                    "INSERT INTO approval_votes (remediation_id, principal, verdict, roles, at,"
                    " comment) VALUES ($1, $2, $3, $4, $5, $6)",
                    remediation_id, pg_text(vote.principal), vote.verdict.value, list(vote.roles),
                    vote.at, pg_text(vote.comment),
                )  # fmt: skip
                after = ApprovalState(request=state.request, votes=(*state.votes, vote))
                if result is VoteResult.APPROVED:
                    await _approve(conn, remediation_id, vote, approved_as(after, vote.principal))
                elif result is VoteResult.REJECTED:
                    await _end_waiting(conn, remediation_id, RemediationStatus.REJECTED,
                                       at=vote.at, reason=rejection_reason(vote))  # fmt: skip
            if result.changes:
                await _enqueue(conn, outbox(result))
            return result

        return await self._db.write("cast vote", write)

    async def cancel_remediation(
        self,
        remediation_id: str,
        *,
        by: str,
        at: datetime,
        reason: str | None = None,
        outbox: Sequence[OutboxMessage] = (),
    ) -> bool:
        async def write(conn: asyncpg.Connection) -> bool:
            row = await conn.fetchrow(
                "SELECT status, claimed_by, finished_at FROM remediations WHERE id = $1 FOR UPDATE",
                remediation_id,
            )
            if row is None or row["claimed_by"] is not None or row["finished_at"] is not None:
                return False  # gone, claimed (running or rehearsing), or over
            old = RemediationStatus(row["status"])
            if old not in (WAITING, RemediationStatus.PLANNED):
                return False
            await _end_waiting(conn, remediation_id, RemediationStatus.CANCELLED, at=at,
                               reason=cancel_reason(by, reason), old=old)  # fmt: skip
            await _enqueue(conn, outbox)
            return True

        return await self._db.write("cancel remediation", write)

    async def due_approvals(self, *, now: datetime, limit: int) -> list[Remediation]:
        async def query(conn: asyncpg.Connection) -> list[Remediation]:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                rows = await conn.fetch(
                    f"SELECT {REMEDIATION_COLUMNS} FROM remediations r WHERE status = $1"
                    " AND EXISTS (SELECT 1 FROM approval_requests a"
                    "   WHERE a.remediation_id = r.id AND (a.expires_at <= $2"
                    "   OR (a.escalated_at IS NULL AND a.response_due_at <= $2)))"
                    " ORDER BY seq LIMIT $3",
                    WAITING.value,
                    now,
                    limit,
                )
                approvals = await approvals_of(conn, [row["id"] for row in rows])
            return [remediation(row, approval=approvals.get(row["id"])) for row in rows]

        return await self._db.read("read due approvals", query)

    async def mark_escalated(
        self, remediation_id: str, *, at: datetime, outbox: Sequence[OutboxMessage] = ()
    ) -> bool:
        async def write(conn: asyncpg.Connection) -> bool:
            if await _waiting_state(conn, remediation_id) is None:
                return False
            marked = await conn.fetchval(
                "UPDATE approval_requests SET escalated_at = $2"
                " WHERE remediation_id = $1 AND escalated_at IS NULL RETURNING remediation_id",
                remediation_id,
                at,
            )
            if marked is None:
                return False
            await _enqueue(conn, outbox)
            return True

        return await self._db.write("mark escalated", write)

    async def expire_approval(
        self, remediation_id: str, *, at: datetime, outbox: Sequence[OutboxMessage] = ()
    ) -> bool:
        async def write(conn: asyncpg.Connection) -> bool:
            state = await _waiting_state(conn, remediation_id)
            if state is None or not state.request.expired(at):
                return False
            await _end_waiting(conn, remediation_id, RemediationStatus.EXPIRED, at=at,
                               reason=expiry_reason(state.request))  # fmt: skip
            await _enqueue(conn, outbox)
            return True

        return await self._db.write("expire approval", write)

    async def close_review(
        self, remediation_id: str, *, by: str, at: datetime, comment: str | None = None
    ) -> bool:
        async def write(conn: asyncpg.Connection) -> bool:
            locked = await conn.fetchval(
                "SELECT remediation_id FROM approval_requests WHERE remediation_id = $1 FOR UPDATE",
                remediation_id,
            )
            if locked is None:
                return False
            state = (await approvals_of(conn, [remediation_id]))[remediation_id]
            if state.review_status() is not ReviewStatus.OWED:
                return False
            await conn.execute(
                "UPDATE approval_requests SET review_closed_by = $2, review_closed_at = $3,"
                " review_comment = $4 WHERE remediation_id = $1",
                remediation_id,
                pg_text(by),
                at,
                pg_text(comment),
            )
            return True

        return await self._db.write("close review", write)


async def _approve(
    conn: asyncpg.Connection, remediation_id: str, vote: Vote, roles: tuple[str, ...]
) -> None:
    """The last seat is filled: the plan is runnable, and records who completed it."""
    check_transition(remediation_id, WAITING, RemediationStatus.PLANNED)
    await conn.execute(
        "UPDATE remediations SET status = 'planned', approved_by = $2, approved_at = $3,"
        " approved_as = $4, approval_comment = $5, updated_at = $3 WHERE id = $1",
        remediation_id,
        pg_text(vote.principal),
        vote.at,
        list(roles) if roles else None,
        pg_text(vote.comment),
    )
