"""Filling an empty PostgreSQL journal with another journal's history, as it was
(``remediator journal copy``): the same seqs, claims, steps, approvals, outbox state,
decision cursor and circuit, so the daemon continues exactly where it stopped.

Everything goes in one transaction, with the tables locked against writers: a copy
that fails or is refused leaves the target as empty as it found it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from remediator.domain.errors import PermanentError
from remediator.journal.postgres.rows import json_text, pg_text


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    # bigint | integer | text | boolean | timestamptz | jsonb | textlist (a text[] column,
    # carried as a JSON array: unnest cannot take arrays of arrays of different lengths)
    type: str


def _columns(spec: str) -> tuple[Column, ...]:
    return tuple(Column(*item.split()) for item in spec.split(","))


# Every table of history, in the order they are copied, with the columns copied. The
# SQLite journal's columns have the same names.
TABLES: dict[str, tuple[Column, ...]] = {
    "signals": _columns(
        "seq bigint, id text, key text, source text, kind text, status text, service text,"
        " namespace text, starts_at timestamptz, ends_at timestamptz,"
        " received_at timestamptz, body jsonb"
    ),
    "decisions": _columns(
        "signal_seq bigint, signal_id text, service text, outcome text, reason text, rule text,"
        " remediation_id text, decided_at timestamptz, explanation text"
    ),
    "remediations": _columns(
        "seq bigint, id text, signal_id text, service text, namespace text, rule text,"
        " action text, status text, reason text, manual boolean, automated boolean,"
        " created_at timestamptz, updated_at timestamptz, decision jsonb, explanation text,"
        " claimed_by text, claimed_at timestamptz, finished_at timestamptz, approved_by text,"
        " approved_at timestamptz, approved_as jsonb, approval_comment text"
    ),
    "remediation_steps": _columns(
        "remediation_id text, idx integer, kind text, status text, started_at timestamptz,"
        " finished_at timestamptz, detail jsonb"
    ),
    "outbox": _columns(
        "seq bigint, id text, channel text, key text, payload jsonb, created_at timestamptz,"
        " attempts integer, last_error text, published_at timestamptz"
    ),
    "slack_messages": _columns("remediation_id text, channel text, ts text"),
    "approval_requests": _columns(
        "remediation_id text, requester text, scenario text, reason text, target text,"
        " policy jsonb, requested_at timestamptz, response_due_at timestamptz,"
        " expires_at timestamptz, escalated_at timestamptz, review_closed_by text,"
        " review_closed_at timestamptz, review_comment text"
    ),
    "approval_votes": _columns(
        "remediation_id text, principal text, verdict text, roles jsonb, at timestamptz,"
        " comment text"
    ),
    "automation_levels": _columns(
        "seq bigint, service text, level text, previous text, changed_at timestamptz,"
        " changed_by text"
    ),
    "record_analysis": _columns(
        "seq bigint, remediation_id text, root_cause text, improvements textlist,"
        " lessons textlist, edited_by text, edited_at timestamptz"
    ),
}
# A journal older than its approval requests: each plan still awaiting approval gets the
# request the migration gives it (as migrations/0002 does for a journal upgraded in place).
_BACKFILL_REQUESTS = """
INSERT INTO approval_requests (remediation_id, policy, requested_at, response_due_at, expires_at)
SELECT id,
       jsonb_build_object(
           'seats',
           CASE WHEN jsonb_array_length(coalesce(decision -> 'approvers', '[]'::jsonb)) = 0
                THEN jsonb_build_array(jsonb_build_object('roles', '[]'::jsonb))
                ELSE (SELECT jsonb_agg(jsonb_build_object('roles', jsonb_build_array(value)))
                      FROM jsonb_array_elements(decision -> 'approvers'))
           END,
           'response_time', 3600, 'expires_after', 14400, 'emergency', false),
       created_at, created_at + interval '1 hour', created_at + interval '4 hours'
FROM remediations r WHERE status = 'awaiting_approval'
  AND NOT EXISTS (SELECT 1 FROM approval_requests a WHERE a.remediation_id = r.id)
"""
# Tables whose seq is an identity column: continued after the highest copied.
_SEQUENCED = ("signals", "remediations", "outbox", "automation_levels", "record_analysis")
_CARRIED_AS_JSON = ("jsonb", "textlist")


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineState:
    decided_seq: int
    circuit_open: bool
    circuit_reason: str | None
    circuit_changed_at: datetime | None
    circuit_changed_by: str | None


Progress = Callable[[str, int, int], None]  # table, rows copied, rows in all


class NotEmpty(PermanentError):
    """The target journal already holds history."""


def insert_statement(table: str) -> str:
    columns = TABLES[table]
    names = ", ".join(c.name for c in columns)
    arrays = ", ".join(
        f"${n}::{'text' if c.type in _CARRIED_AS_JSON else c.type}[]"
        for n, c in enumerate(columns, 1)
    )
    values = ", ".join(_select_value(c) for c in columns)
    return f"INSERT INTO {table} ({names}) SELECT {values} FROM unnest({arrays}) AS u ({names})"


def _select_value(column: Column) -> str:
    if column.type == "jsonb":
        return f"{column.name}::jsonb"
    if column.type == "textlist":
        return (
            f"ARRAY(SELECT e FROM jsonb_array_elements_text(u.{column.name}::jsonb)"
            " WITH ORDINALITY AS t (e, n) ORDER BY n)"
        )
    return column.name


def _as_parameter(column: Column, value: Any) -> Any:
    if value is None:
        return None
    if column.type == "text":
        return pg_text(value)
    if column.type in _CARRIED_AS_JSON:
        return json_text(value)
    return value


async def holdings(conn: asyncpg.Connection) -> dict[str, int]:
    """Rows per table of history, with the cursor and a circuit that ever changed."""
    counts = {table: await conn.fetchval(f"SELECT count(*) FROM {table}") for table in TABLES}
    counts["decision cursor"] = await conn.fetchval("SELECT seq FROM decision_cursor")
    counts["circuit changes"] = await conn.fetchval(
        "SELECT count(*) FROM circuit WHERE changed_at IS NOT NULL"
    )
    return counts


async def import_history(
    conn: asyncpg.Connection,
    *,
    rows: Callable[[str], AsyncIterator[Sequence[tuple[Any, ...]]]],
    totals: dict[str, int],
    state: EngineState,
    progress: Progress,
    before_commit: Callable[[], None] = lambda: None,
) -> dict[str, int]:
    """Copy every table (``rows(table)`` yields chunks of rows in TABLES' column order)
    in one transaction; return the target's counts, checked against ``totals``.
    ``before_commit`` may still refuse the copy (raise), leaving the target empty."""
    async with conn.transaction():
        # Writers (a daemon started too early) wait until the copy commits.
        await conn.execute(f"LOCK TABLE {', '.join(TABLES)}, decision_cursor, circuit"
                           " IN EXCLUSIVE MODE")  # fmt: skip
        found = await holdings(conn)
        if any(found.values()):
            held = ", ".join(f"{name} {n}" for name, n in found.items() if n)
            raise NotEmpty(f"the target journal is not empty ({held})")
        for table, columns in TABLES.items():
            statement = insert_statement(table)
            done = 0
            progress(table, done, totals[table])
            async for chunk in rows(table):
                await conn.execute(
                    statement,
                    *(
                        [_as_parameter(column, row[i]) for row in chunk]
                        for i, column in enumerate(columns)
                    ),
                )
                done += len(chunk)
                progress(table, done, totals[table])
        for table in _SEQUENCED:
            await conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'seq'),"
                f" coalesce(max(seq), 1), max(seq) IS NOT NULL) FROM {table}"
            )
        backfilled = await conn.fetchval(
            f"WITH added AS ({_BACKFILL_REQUESTS} RETURNING 1) SELECT count(*) FROM added"
        )
        await conn.execute("UPDATE decision_cursor SET seq = $1", state.decided_seq)
        await conn.execute(
            "UPDATE circuit SET open = $1, reason = $2, changed_at = $3, changed_by = $4",
            state.circuit_open,
            pg_text(state.circuit_reason),
            state.circuit_changed_at,
            state.circuit_changed_by,
        )
        copied = await holdings(conn)
        expected = {**totals, "decision cursor": state.decided_seq}
        expected["approval_requests"] = totals.get("approval_requests", 0) + backfilled
        wrong = {name: (copied[name], n) for name, n in expected.items() if copied.get(name) != n}
        if wrong:
            shown = ", ".join(f"{name}: {got} copied, {n} in the source"
                              for name, (got, n) in wrong.items())  # fmt: skip
            raise PermanentError(f"the copy does not match its source ({shown})")
        before_commit()
        return copied
