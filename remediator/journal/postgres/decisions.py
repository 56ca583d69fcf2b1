"""DecisionStore: signals to decide, their decisions, and the history the rules weigh.

Deciding is shared by every replica without a leader: ``undecided_signals`` returns the
cursor it read, and ``record_decisions`` moves it by compare-and-set in the transaction
that stores the decisions. The replica that moved it first wins; the other's decisions
are not written (it reads again and finds those signals decided).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import asyncpg

from remediator.domain.errors import PermanentError
from remediator.domain.lifecycle import RemediationStatus
from remediator.domain.plans import ActionKind
from remediator.domain.signals import Signal
from remediator.journal.postgres.circuit import circuit_record
from remediator.journal.postgres.database import Database
from remediator.journal.postgres.rows import (
    INSERT_OUTBOX,
    INSERT_REQUEST,
    SIGNAL_COLUMNS,
    json_text,
    outbox_params,
    pg_text,
    request_for,
    request_params,
    stored_signal,
)
from remediator.ports import (
    CircuitInputs,
    DecisionBacklog,
    DecisionRecord,
    NewRemediation,
    OutboxMessage,
    RemediationSummary,
    StoredSignal,
    UndecidedBatch,
)

S = RemediationStatus
# Remediations that never acted and never will: they don't spend the action budget.
_NEVER_ACTED = [
    s.value for s in (S.SKIPPED, S.DRY_RUN, S.AWAITING_APPROVAL, S.REJECTED, S.CANCELLED, S.EXPIRED)
]
del S
# The predicate of migration 0005's partial index, as a literal the planner can match.
_AUTOMATED_ACTED = (
    "automated AND status NOT IN (" + ", ".join(f"'{status}'" for status in _NEVER_ACTED) + ")"
)

# One statement, one snapshot: the cursor and the signals after it agree.
_UNDECIDED = f"""
SELECT c.seq AS cursor, s.*
FROM decision_cursor c
LEFT JOIN LATERAL (
    SELECT {SIGNAL_COLUMNS} FROM signals WHERE seq > c.seq ORDER BY seq LIMIT $1
) s ON true
ORDER BY s.seq
"""

# The same, seqs only: the caller keeps some of the signals (``known``).
_UNDECIDED_SEQS = """
SELECT c.seq AS cursor, s.seq
FROM decision_cursor c
LEFT JOIN LATERAL (SELECT seq FROM signals WHERE seq > c.seq ORDER BY seq LIMIT $1) s ON true
ORDER BY s.seq
"""
_SIGNALS_BY_SEQ = f"SELECT {SIGNAL_COLUMNS} FROM signals WHERE seq = ANY($1::bigint[])"

# One statement, one snapshot; an index range on seq, empty while deciding keeps up.
_BACKLOG = """
SELECT (SELECT count(*) FROM signals WHERE seq > c.seq) AS signals,
       (SELECT received_at FROM signals WHERE seq > c.seq ORDER BY seq LIMIT 1) AS oldest
FROM decision_cursor c
"""

_INSERT_DECISIONS = """
INSERT INTO decisions (signal_seq, signal_id, service, outcome, reason, rule, remediation_id,
                       decided_at, explanation)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
                     $6::text[], $7::text[], $8::timestamptz[], $9::text[])
ON CONFLICT (signal_seq) DO NOTHING
"""

_INSERT_REMEDIATIONS = """
INSERT INTO remediations (id, signal_id, service, namespace, rule, action, status, reason,
                          manual, automated, created_at, updated_at, decision, explanation)
SELECT id, signal_id, service, namespace, rule, action, status, reason, manual, automated,
       created_at, created_at, decision::jsonb, explanation
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::text[], $8::text[], $9::boolean[], $10::boolean[], $11::timestamptz[],
            $12::text[], $13::text[])
     WITH ORDINALITY AS r (id, signal_id, service, namespace, rule, action, status, reason,
                           manual, automated, created_at, decision, explanation, ord)
ORDER BY ord
ON CONFLICT (id) DO NOTHING
"""


class PgDecisionStore:
    _db: Database

    async def undecided_signals(
        self, *, limit: int, known: Mapping[int, Signal] | None = None
    ) -> UndecidedBatch:
        async def query(conn: asyncpg.Connection) -> UndecidedBatch:
            if not known:
                rows = await conn.fetch(_UNDECIDED, limit)
                return UndecidedBatch(
                    cursor=rows[0]["cursor"],
                    signals=[stored_signal(row) for row in rows if row["seq"] is not None],
                )
            # One snapshot: which seqs follow the cursor, and the rows of those not kept.
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                heads = await conn.fetch(_UNDECIDED_SEQS, limit)
                seqs = [row["seq"] for row in heads if row["seq"] is not None]
                missing = [seq for seq in seqs if seq not in known]
                read: dict[int, StoredSignal] = {}
                if missing:
                    for row in await conn.fetch(_SIGNALS_BY_SEQ, missing):
                        item = stored_signal(row)
                        read[item.seq] = item
            return UndecidedBatch(
                cursor=heads[0]["cursor"],
                signals=[
                    read[seq] if seq in read else StoredSignal(seq=seq, signal=known[seq])
                    for seq in seqs
                ],
            )

        return await self._db.read("read undecided signals", query)

    async def record_decisions(
        self,
        decisions: Sequence[DecisionRecord],
        *,
        cursor: int,
        through_seq: int,
        outbox: Sequence[OutboxMessage] = (),
    ) -> bool:
        if through_seq < cursor:
            raise PermanentError(f"decisions through seq {through_seq} are behind {cursor}")
        remediations = [d.remediation for d in decisions if d.remediation is not None]
        for new in remediations:
            if not new.status.initial:
                raise PermanentError(f"remediation {new.id}: cannot be created {new.status.value}")

        async def write(conn: asyncpg.Connection) -> bool:
            # The compare-and-set first: its row lock orders concurrent deciders, and
            # the loser writes nothing.
            moved = await conn.fetchval(
                "UPDATE decision_cursor SET seq = $2 WHERE seq = $1 RETURNING seq",
                cursor,
                through_seq,
            )
            if moved is None:
                return False
            if decisions:
                await conn.execute(_INSERT_DECISIONS, *_decision_columns(decisions))
            if remediations:
                await conn.execute(_INSERT_REMEDIATIONS, *_remediation_columns(remediations))
            waiting = [r for r in remediations if r.status is RemediationStatus.AWAITING_APPROVAL]
            if waiting:
                await conn.executemany(
                    INSERT_REQUEST, [request_params(r.id, request_for(r)) for r in waiting]
                )
            if outbox:
                await conn.execute(INSERT_OUTBOX, *outbox_params(outbox))
            return True

        return await self._db.write("record decisions", write)

    async def service_events(
        self,
        *,
        service: str,
        kinds: Sequence[str],
        limit: int = 50,
        sources: Sequence[str] | None = None,
    ) -> list[StoredSignal]:
        if not kinds or (sources is not None and not sources):
            return []

        async def query(conn: asyncpg.Connection) -> list[StoredSignal]:
            rows = await conn.fetch(
                f"SELECT {SIGNAL_COLUMNS} FROM signals WHERE service = $1"
                " AND kind = ANY($2::text[]) AND ($3::text[] IS NULL OR source = ANY($3))"
                " ORDER BY seq DESC LIMIT $4",
                service,
                list(kinds),
                None if sources is None else list(sources),
                limit,
            )
            return [stored_signal(row) for row in rows]

        return await self._db.read("read service events", query)

    async def firing_alert_times(
        self, *, service: str, kinds: Sequence[str], since: datetime, until: datetime
    ) -> list[datetime]:
        if not kinds:
            return []

        async def query(conn: asyncpg.Connection) -> list[datetime]:
            rows = await conn.fetch(
                "SELECT starts_at FROM signals WHERE service = $1 AND kind = ANY($2::text[])"
                " AND status = 'firing' AND starts_at >= $3 AND starts_at < $4",
                service,
                list(kinds),
                since,
                until,
            )
            return [row["starts_at"] for row in rows]

        return await self._db.read("read firing alerts", query)

    async def remediation_history(
        self, *, service: str, since: datetime
    ) -> list[RemediationSummary]:
        async def query(conn: asyncpg.Connection) -> list[RemediationSummary]:
            rows = await conn.fetch(
                "SELECT id, action, status, rule, manual, automated, created_at"
                " FROM remediations WHERE service = $1 AND created_at >= $2"
                " AND status <> 'skipped' ORDER BY seq",
                service,
                since,
            )
            return [
                RemediationSummary(
                    id=row["id"],
                    action=None if row["action"] is None else ActionKind(row["action"]),
                    status=RemediationStatus(row["status"]),
                    rule=row["rule"],
                    manual=row["manual"],
                    automated=row["automated"],
                    created_at=row["created_at"],
                )
                for row in rows
            ]

        return await self._db.read("read remediation history", query)

    async def decision_backlog(self) -> DecisionBacklog:
        async def query(conn: asyncpg.Connection) -> DecisionBacklog:
            row = await conn.fetchrow(_BACKLOG)
            if row is None:  # the schema's migration puts the one row there
                raise PermanentError("the journal has no decision cursor")
            return DecisionBacklog(signals=int(row["signals"]), oldest_received_at=row["oldest"])

        return await self._db.read("read the decision backlog", query)

    async def circuit_inputs(self) -> CircuitInputs:
        async def query(conn: asyncpg.Connection) -> CircuitInputs:
            # One snapshot for the three parts: a reset cannot fall between them.
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                record = circuit_record(
                    await conn.fetchrow("SELECT open, reason, changed_at, changed_by FROM circuit")
                )
                since = record.changed_at
                times = await conn.fetch(
                    f"SELECT created_at FROM remediations WHERE {_AUTOMATED_ACTED}"
                    " AND created_at >= $1 ORDER BY seq",
                    since or datetime.min.replace(tzinfo=UTC),
                )
                ended = await conn.fetch(
                    "SELECT status FROM remediations WHERE status IN ('succeeded', 'failed')"
                    " AND ($1::timestamptz IS NULL OR updated_at >= $1)"
                    " ORDER BY updated_at DESC, seq DESC LIMIT 100",
                    since,
                )
            failures = 0
            for row in ended:
                if row["status"] != "failed":
                    break
                failures += 1
            return CircuitInputs(
                record=record,
                automated_action_times=tuple(row["created_at"] for row in times),
                consecutive_failures=failures,
            )

        return await self._db.read("read the circuit's inputs", query)


def _decision_columns(decisions: Sequence[DecisionRecord]) -> tuple[list[object], ...]:
    return (
        [d.signal_seq for d in decisions],
        [d.signal_id for d in decisions],
        [pg_text(d.service) for d in decisions],
        [d.outcome for d in decisions],
        [pg_text(d.reason) for d in decisions],
        [pg_text(d.rule) for d in decisions],
        [None if d.remediation is None else d.remediation.id for d in decisions],
        [d.decided_at for d in decisions],
        [pg_text(d.explanation) for d in decisions],
    )


def _remediation_columns(remediations: Sequence[NewRemediation]) -> tuple[list[object], ...]:
    return (
        [r.id for r in remediations],
        [r.signal_id for r in remediations],
        [pg_text(r.service) for r in remediations],
        [pg_text(r.namespace) for r in remediations],
        [pg_text(r.rule) for r in remediations],
        [None if r.action is None else r.action.value for r in remediations],
        [r.status.value for r in remediations],
        [pg_text(r.reason) for r in remediations],
        [r.manual for r in remediations],
        [r.automated for r in remediations],
        [r.created_at for r in remediations],
        [json_text(r.decision) for r in remediations],
        [pg_text(r.explanation) for r in remediations],
    )
