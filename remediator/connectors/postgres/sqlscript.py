"""A migration script's statements and what they need, from PostgreSQL's own parser.

PostgreSQL runs a multi-statement simple query as one implicit transaction, so a
script with ``CREATE INDEX CONCURRENTLY`` must be sent statement by statement, and
we must know *before* running a down script whether it can run in a transaction at
all. Both are read from the parse tree of PostgreSQL's grammar (``pglast`` embeds
libpg_query), not by lexing by hand: a hand-written splitter cut a PostgreSQL 14+
``BEGIN ATOMIC ... END`` function body into pieces and took its ``END`` for a
``COMMIT``, refusing a script that runs fine in a transaction. pglast stays inside
this connector, like the database driver.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pglast import ast, parse_sql, split
from pglast.enums import ReindexObjectType
from pglast.parser import ParseError

from remediator.domain.errors import PermanentError

__all__ = [
    "NO_TRANSACTION_MARKER",
    "ScriptInfo",
    "ScriptSyntaxError",
    "analyse",
    "split_statements",
]

# A migration can say so itself, like dbmate's ``transaction:false``.
NO_TRANSACTION_MARKER = re.compile(r"--\s*remediator:\s*no-transaction\b", re.IGNORECASE)


class ScriptSyntaxError(PermanentError):
    """PostgreSQL's grammar does not accept the script: running it would fail too."""

    def __init__(self, message: str, *, line: int | None) -> None:
        super().__init__(message)
        self.line = line


@dataclass(frozen=True, slots=True, kw_only=True)
class ScriptInfo:
    statements: tuple[str, ...]  # each as written, without its ';' and leading comments
    non_transactional: tuple[str, ...]  # why it cannot run in a transaction (empty: it can)
    transaction_control: bool  # contains BEGIN/COMMIT/... of its own

    @property
    def transactional(self) -> bool:
        return not self.non_transactional and not self.transaction_control


def _parse(sql: str) -> list[tuple[str, Any]]:
    """(statement text, parse tree) for each statement of the script."""
    try:
        trees = parse_sql(sql)
        slices = list(split(sql, with_parser=True, only_slices=True))
    except ParseError as exc:
        location = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else None
        line = sql.count("\n", 0, location) + 1 if location is not None else None
        where = f" (line {line})" if line is not None else ""
        raise ScriptSyntaxError(f"{exc.args[0]}{where}", line=line) from exc
    # Both come from one parse of the same text: one slice per statement, in order.
    return [(sql[piece].strip(), raw.stmt) for piece, raw in zip(slices, trees, strict=True)]


def _why_not_in_a_transaction(stmt: Any) -> Iterator[str]:
    """What PostgreSQL refuses inside a transaction block (PreventInTransactionBlock)."""
    if isinstance(stmt, ast.IndexStmt | ast.DropStmt) and stmt.concurrent:
        yield "CONCURRENTLY (index build/drop/reindex)"
    elif isinstance(stmt, ast.ReindexStmt):
        params = {p.defname for p in stmt.params or ()}
        if "concurrently" in params:
            yield "CONCURRENTLY (index build/drop/reindex)"
        if stmt.kind in (ReindexObjectType.REINDEX_OBJECT_SYSTEM,
                         ReindexObjectType.REINDEX_OBJECT_DATABASE):  # fmt: skip
            yield "REINDEX SYSTEM/DATABASE"
    elif isinstance(stmt, ast.VacuumStmt) and stmt.is_vacuumcmd:  # ANALYZE alone may
        yield "VACUUM"
    elif isinstance(stmt, ast.CreatedbStmt | ast.DropdbStmt):
        yield "CREATE/DROP DATABASE"
    elif isinstance(stmt, ast.CreateTableSpaceStmt | ast.DropTableSpaceStmt):
        yield "CREATE/DROP TABLESPACE"
    elif isinstance(stmt, ast.AlterSystemStmt):
        yield "ALTER SYSTEM"
    elif isinstance(stmt, ast.CreateSubscriptionStmt | ast.DropSubscriptionStmt):
        yield "CREATE/DROP SUBSCRIPTION"


def split_statements(sql: str) -> list[str]:
    """The script's statements in order, without empty ones (comment-only pieces)."""
    return [text for text, _ in _parse(sql)]


def analyse(sql: str) -> ScriptInfo:
    """Raises ScriptSyntaxError for a script PostgreSQL's grammar does not accept."""
    pieces = _parse(sql)
    reasons: list[str] = []
    if NO_TRANSACTION_MARKER.search(sql):
        reasons.append("marked '-- remediator: no-transaction'")
    for _, stmt in pieces:
        for why in _why_not_in_a_transaction(stmt):
            if why not in reasons:
                reasons.append(why)
    return ScriptInfo(
        statements=tuple(text for text, _ in pieces),
        non_transactional=tuple(reasons),
        # The script manages transactions itself: wrapping it would break its control.
        transaction_control=any(isinstance(stmt, ast.TransactionStmt) for _, stmt in pieces),
    )
