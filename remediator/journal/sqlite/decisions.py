"""DecisionStore on SQLite: the signals to decide, the decisions, and the history the
rules weigh. The decision cursor moves by compare-and-set, so each signal is decided
exactly once however many deciders read the same batch."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime

from remediator.domain.errors import PermanentError
from remediator.domain.lifecycle import RemediationStatus, utc_text
from remediator.domain.plans import ActionKind
from remediator.domain.signals import Signal, Status
from remediator.journal.sqlite.circuit import circuit_record
from remediator.journal.sqlite.database import Role, job_error, rollback
from remediator.journal.sqlite.rows import (
    SIGNAL_COLUMNS,
    insert_approval_request,
    insert_outbox,
    json_text,
    parse_utc,
    request_for,
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

# Remediations that never acted on anything: they don't count toward the circuit
# breaker's budget of automated actions.
NEVER_ACTED = (
    RemediationStatus.SKIPPED,
    RemediationStatus.DRY_RUN,
    RemediationStatus.AWAITING_APPROVAL,
    RemediationStatus.REJECTED,
    RemediationStatus.CANCELLED,
    RemediationStatus.EXPIRED,
)
_ENDED = (RemediationStatus.SUCCEEDED, RemediationStatus.FAILED)
# The predicates of the partial indexes of migration 0013, word for word: SQLite uses a
# partial index only for a query that names its terms (a bound parameter would not do),
# and the queries name the index (INDEXED BY): without statistics the planner prefers
# the plain created_at index, which a storm's skipped rows fill; a query the index cannot
# serve is an error rather than a silent scan.
_NOT_SKIPPED = "status != 'skipped'"
_AUTOMATED_ACTED = (
    "automated = 1 AND status NOT IN ("
    + ", ".join(f"'{status.value}'" for status in NEVER_ACTED)
    + ")"
)


# Decision rows made between yields to the event loop (a storm's plans encode slowly).
_ROWS_PER_SLICE = 64
# SQLite's default limit on host parameters is 999 before 3.32.
_LOOKUP_CHUNK = 900


def _marks(values: Sequence[object]) -> str:
    return ",".join("?" * len(values))


def _decided_seq(conn: sqlite3.Connection) -> int:
    """The decision cursor: every signal up to this seq is decided."""
    (value,) = conn.execute("SELECT value FROM engine_state WHERE name = 'decided_seq'").fetchone()
    return int(value)


class SqliteDecisions(Role):
    async def undecided_signals(
        self, *, limit: int, known: Mapping[int, Signal] | None = None
    ) -> UndecidedBatch:
        def query(conn: sqlite3.Connection) -> UndecidedBatch:
            # One read transaction: the cursor and the signals after it from one snapshot.
            conn.execute("BEGIN")
            try:
                cursor = _decided_seq(conn)
                if known:
                    signals = _known_or_read(conn, cursor, limit, known)
                else:
                    rows = conn.execute(
                        f"SELECT {SIGNAL_COLUMNS} FROM signals WHERE seq > ? ORDER BY seq LIMIT ?",
                        (cursor, limit),
                    ).fetchall()
                    signals = [stored_signal(r) for r in rows]
            finally:
                rollback(conn)
            return UndecidedBatch(cursor=cursor, signals=signals)

        return await self._db.read(query)

    async def record_decisions(
        self,
        decisions: Sequence[DecisionRecord],
        *,
        cursor: int,
        through_seq: int,
        outbox: Sequence[OutboxMessage] = (),
    ) -> bool:
        remediations = [d.remediation for d in decisions if d.remediation is not None]
        for r in remediations:
            if not r.status.initial:
                raise PermanentError(f"remediation {r.id} cannot begin {r.status.value}")

        # The rows are made here, on the event loop a slice at a time, not in the writer
        # thread: encoding a storm's 500 plans there held the GIL for ~10 ms at a stretch,
        # and the loop waited for it.
        decision_rows: list[tuple[object, ...]] = []
        remediation_rows: list[tuple[object, ...]] = []
        for n, d in enumerate(decisions, start=1):
            if n % _ROWS_PER_SLICE == 0:
                await asyncio.sleep(0)
            try:
                decision_rows.append(_decision_row(d))
                if d.remediation is not None:
                    remediation_rows.append(_remediation_row(d.remediation))
            except Exception as exc:
                raise job_error(exc) from exc

        def write(conn: sqlite3.Connection) -> bool:
            # First, so that a decider that lost the race writes nothing at all.
            moved = conn.execute(
                "UPDATE engine_state SET value = ? WHERE name = 'decided_seq' AND value = ?",
                (str(through_seq), str(cursor)),
            ).rowcount
            if not moved:
                return False
            insert_outbox(conn, outbox)
            conn.executemany(
                "INSERT OR IGNORE INTO decisions (signal_seq, signal_id, service, outcome,"
                " reason, rule, remediation_id, decided_at, explanation)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                decision_rows,
            )
            conn.executemany(
                "INSERT OR IGNORE INTO remediations (id, signal_id, service, namespace, rule,"
                " action, status, reason, manual, automated, created_at, updated_at,"
                " decision, explanation) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                remediation_rows,
            )
            for r in remediations:
                if r.status is RemediationStatus.AWAITING_APPROVAL:
                    insert_approval_request(conn, r.id, request_for(r))
            return True

        moved: bool = await self._db.transaction(write)
        return moved

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
        by_source = "" if sources is None else f" AND source IN ({_marks(sources)})"

        def query(conn: sqlite3.Connection) -> list[StoredSignal]:
            rows = conn.execute(
                f"SELECT {SIGNAL_COLUMNS} FROM signals WHERE service = ?"
                f" AND kind IN ({_marks(kinds)}){by_source} ORDER BY seq DESC LIMIT ?",
                (service, *kinds, *(sources or ()), limit),
            ).fetchall()
            return [stored_signal(row) for row in rows]

        return await self._db.read(query)

    async def firing_alert_times(
        self, *, service: str, kinds: Sequence[str], since: datetime, until: datetime
    ) -> list[datetime]:
        if not kinds:
            return []

        def query(conn: sqlite3.Connection) -> list[datetime]:
            rows = conn.execute(
                f"SELECT starts_at FROM signals WHERE service = ? AND kind IN ({_marks(kinds)})"
                " AND status = ? AND starts_at >= ? AND starts_at < ?",
                (service, *kinds, Status.FIRING.value, utc_text(since), utc_text(until)),
            ).fetchall()
            return [parse_utc(r[0]) for r in rows]

        return await self._db.read(query)

    async def remediation_history(
        self, *, service: str, since: datetime
    ) -> list[RemediationSummary]:
        def query(conn: sqlite3.Connection) -> list[RemediationSummary]:
            rows = conn.execute(
                "SELECT id, action, status, rule, manual, automated, created_at FROM remediations"
                " INDEXED BY remediations_service_not_skipped"
                f" WHERE service = ? AND created_at >= ? AND {_NOT_SKIPPED} ORDER BY seq",
                (service, utc_text(since)),
            ).fetchall()
            return [
                RemediationSummary(
                    id=rid,
                    action=None if action is None else ActionKind(action),
                    status=RemediationStatus(status),
                    rule=rule,
                    manual=bool(manual),
                    automated=bool(automated),
                    created_at=parse_utc(created_at),
                )
                for rid, action, status, rule, manual, automated, created_at in rows
            ]

        return await self._db.read(query)

    async def decision_backlog(self) -> DecisionBacklog:
        def query(conn: sqlite3.Connection) -> DecisionBacklog:
            conn.execute("BEGIN")
            try:
                cursor = _decided_seq(conn)
                # A range of the rowid: nothing to count when deciding keeps up.
                (count,) = conn.execute(
                    "SELECT count(*) FROM signals WHERE seq > ?", (cursor,)
                ).fetchone()
                first = conn.execute(
                    "SELECT received_at FROM signals WHERE seq > ? ORDER BY seq LIMIT 1",
                    (cursor,),
                ).fetchone()
            finally:
                rollback(conn)
            return DecisionBacklog(
                signals=int(count), oldest_received_at=parse_utc(first[0]) if first else None
            )

        return await self._db.read(query)

    async def circuit_inputs(self) -> CircuitInputs:
        def query(conn: sqlite3.Connection) -> CircuitInputs:
            conn.execute("BEGIN")  # one snapshot for the three parts
            try:
                record = circuit_record(conn)
                since = utc_text(record.changed_at) if record.changed_at else ""
                times = conn.execute(
                    f"SELECT created_at FROM remediations WHERE {_AUTOMATED_ACTED}"
                    " AND created_at >= ?",
                    (since,),
                ).fetchall()
                ended = conn.execute(
                    f"SELECT status FROM remediations WHERE status IN ({_marks(_ENDED)})"
                    " AND updated_at >= ? ORDER BY updated_at DESC LIMIT 100",
                    (*_ENDED, since),
                ).fetchall()
            finally:
                rollback(conn)
            failures = 0
            for (status,) in ended:
                if status != RemediationStatus.FAILED:
                    break
                failures += 1
            return CircuitInputs(
                record=record,
                automated_action_times=tuple(parse_utc(t) for (t,) in times),
                consecutive_failures=failures,
            )

        return await self._db.read(query)


def _known_or_read(
    conn: sqlite3.Connection, cursor: int, limit: int, known: Mapping[int, Signal]
) -> list[StoredSignal]:
    """The signals after ``cursor``: which ones from the journal (a rowid range), each
    from ``known`` when there, otherwise read (and parsed) from its row."""
    seqs = [seq for (seq,) in conn.execute(
        "SELECT seq FROM signals WHERE seq > ? ORDER BY seq LIMIT ?", (cursor, limit)
    )]  # fmt: skip
    missing = [seq for seq in seqs if seq not in known]
    read: dict[int, StoredSignal] = {}
    for start in range(0, len(missing), _LOOKUP_CHUNK):
        chunk = missing[start : start + _LOOKUP_CHUNK]
        for row in conn.execute(
            f"SELECT {SIGNAL_COLUMNS} FROM signals WHERE seq IN ({_marks(chunk)})", chunk
        ):
            read[row[0]] = stored_signal(row)
    return [read[seq] if seq in read else StoredSignal(seq=seq, signal=known[seq]) for seq in seqs]


def _decision_row(d: DecisionRecord) -> tuple[object, ...]:
    return (
        d.signal_seq, d.signal_id, d.service, d.outcome, d.reason, d.rule,
        d.remediation.id if d.remediation else None, utc_text(d.decided_at), d.explanation,
    )  # fmt: skip


def _remediation_row(r: NewRemediation) -> tuple[object, ...]:
    created = utc_text(r.created_at)
    return (
        r.id, r.signal_id, r.service, r.namespace, r.rule,
        None if r.action is None else r.action.value, r.status.value, r.reason,
        int(r.manual), int(r.automated), created, created, json_text(r.decision), r.explanation,
    )  # fmt: skip
