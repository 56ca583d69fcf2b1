"""Checks after a revert: migration state, invalid indexes, NOT VALID constraints, and
the service's own integrity queries.

Every check runs even when an earlier one failed, so the record shows the whole
picture. Integrity queries run in a READ ONLY transaction with a statement timeout:
they come from configuration, and checking must never change or hang the database.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from pydantic import SecretStr

from remediator.connectors.postgres.dsn import close_quietly, connect
from remediator.domain.record import CheckResult, CheckStatus

__all__ = ["Check", "IntegrityQuery", "ValidationReport", "validate"]

_SHOWN_ROWS = 5
_DETAIL_CHARS = 500

_INVALID_INDEXES = """
SELECT n.nspname AS schema, c.relname AS index, t.relname AS "table"
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT i.indisvalid
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%'
ORDER BY 1, 2
"""
_NOT_VALID_CONSTRAINTS = """
SELECT n.nspname AS schema, c.conname AS constraint,
       coalesce(t.relname, ty.typname) AS "on", c.contype AS type
FROM pg_constraint c
JOIN pg_namespace n ON n.oid = c.connamespace
LEFT JOIN pg_class t ON t.oid = c.conrelid
LEFT JOIN pg_type ty ON ty.oid = c.contypid
WHERE NOT c.convalidated
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
ORDER BY 1, 2
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class IntegrityQuery:
    """A query that must return ``expect_rows`` rows (0: "no rows violate this")."""

    name: str
    sql: str
    expect_rows: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    name: str  # "migration_state", "invalid_indexes", "not_valid_constraints", "integrity:<n>"
    passed: bool
    detail: str

    def to_record(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


@dataclass(frozen=True, slots=True, kw_only=True)
class ValidationReport:
    checks: tuple[Check, ...]
    duration_s: float

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.passed)

    def to_record(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "duration_s": round(self.duration_s, 3),
            "checks": [c.to_record() for c in self.checks],
        }

    def as_check_result(self) -> CheckResult:
        """The rollback record's ``results.database`` line."""
        if self.passed:
            return CheckResult(
                status=CheckStatus.PASSED, detail=f"{len(self.checks)} checks passed"
            )
        detail = "; ".join(f"{c.name}: {c.detail}" for c in self.failures)
        return CheckResult(status=CheckStatus.FAILED, detail=detail[:_DETAIL_CHARS])


def _rows_text(rows: Sequence[asyncpg.Record]) -> str:
    shown = ", ".join(
        "(" + ", ".join(f"{k}={v!r}" for k, v in r.items()) + ")" for r in rows[:_SHOWN_ROWS]
    )
    more = f" and {len(rows) - _SHOWN_ROWS} more" if len(rows) > _SHOWN_ROWS else ""
    return (shown + more)[:_DETAIL_CHARS]


def state_check(*, expected: str | None, actual: str | None) -> Check:
    """Whether the migration state is what the revert aimed at (None: base)."""
    want = expected or "base"
    have = actual or "base"
    if expected == actual:
        return Check(name="migration_state", passed=True, detail=f"at {have}")
    return Check(name="migration_state", passed=False, detail=f"at {have}, expected {want}")


async def validate(
    *,
    dsn: SecretStr,
    expected_version: str | None,
    actual_version: str | None,
    integrity_queries: Sequence[IntegrityQuery] = (),
    query_timeout_s: float = 30.0,
    connect_timeout_s: float = 10.0,
) -> ValidationReport:
    """Run every check; raises only when the database cannot be reached at all.

    ``actual_version`` comes from the runner's status after the revert (the runner
    knows where its state lives); ``expected_version`` is the revert's target.
    """
    t0 = time.monotonic()
    checks = [state_check(expected=expected_version, actual=actual_version)]
    conn = await connect(dsn, what="validation", timeout_s=connect_timeout_s)
    try:
        for name, sql, what in (
            ("invalid_indexes", _INVALID_INDEXES, "invalid"),
            ("not_valid_constraints", _NOT_VALID_CONSTRAINTS, "NOT VALID"),
        ):
            try:
                rows = await conn.fetch(sql, timeout=query_timeout_s)
            except (asyncpg.PostgresError, TimeoutError) as exc:
                checks.append(Check(name=name, passed=False, detail=f"check failed: {exc}"))
                continue
            checks.append(
                Check(
                    name=name,
                    passed=not rows,
                    detail=f"{len(rows)} {what}: {_rows_text(rows)}" if rows else f"none {what}",
                )
            )
        for query in integrity_queries:
            checks.append(await _integrity(conn, query, timeout_s=query_timeout_s))
    finally:
        await close_quietly(conn)
    return ValidationReport(checks=tuple(checks), duration_s=time.monotonic() - t0)


async def _integrity(conn: asyncpg.Connection, query: IntegrityQuery, *, timeout_s: float) -> Check:
    name = f"integrity:{query.name}"
    try:
        async with conn.transaction(readonly=True):
            rows = await conn.fetch(query.sql, timeout=timeout_s)
    except (asyncpg.PostgresError, TimeoutError) as exc:
        return Check(name=name, passed=False, detail=f"query failed: {exc}")
    if len(rows) == query.expect_rows:
        return Check(name=name, passed=True, detail=f"{len(rows)} rows as expected")
    return Check(
        name=name,
        passed=False,
        detail=f"{len(rows)} rows, expected {query.expect_rows}: {_rows_text(rows)}",
    )
