"""Just enough SQL lexing to split a migration script and to see what it needs.

PostgreSQL runs a multi-statement simple query as one implicit transaction, so a
script with ``CREATE INDEX CONCURRENTLY`` must be sent statement by statement, and
we must know *before* running a down script whether it can run in a transaction at
all. Both need the script's statements with comments and quoted text told apart
from code: a ``;`` or ``CONCURRENTLY`` inside a string, a dollar-quoted function
body or a comment is not code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["NO_TRANSACTION_MARKER", "ScriptInfo", "analyse", "split_statements"]

# A migration can say so itself, like dbmate's ``transaction:false``.
NO_TRANSACTION_MARKER = re.compile(r"--\s*remediator:\s*no-transaction\b", re.IGNORECASE)

_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")

# Statements PostgreSQL refuses inside a transaction block (checked on code only).
_NON_TRANSACTIONAL = (
    (re.compile(r"\bconcurrently\b", re.I), "CONCURRENTLY (index build/drop/reindex)"),
    (re.compile(r"^\s*vacuum\b", re.I), "VACUUM"),
    (re.compile(r"^\s*(create|drop)\s+database\b", re.I), "CREATE/DROP DATABASE"),
    (re.compile(r"^\s*(create|drop)\s+tablespace\b", re.I), "CREATE/DROP TABLESPACE"),
    (re.compile(r"^\s*alter\s+system\b", re.I), "ALTER SYSTEM"),
    (re.compile(r"^\s*(create|drop)\s+subscription\b", re.I), "CREATE/DROP SUBSCRIPTION"),
    (re.compile(r"^\s*reindex\s+(system|database)\b", re.I), "REINDEX SYSTEM/DATABASE"),
)
# The script manages transactions itself: wrapping it would break its own control.
_TRANSACTION_CONTROL = re.compile(
    r"^\s*(begin|commit|rollback|end|start\s+transaction|abort)\b", re.IGNORECASE
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ScriptInfo:
    statements: tuple[str, ...]  # each without its trailing ';', comments kept
    non_transactional: tuple[str, ...]  # why it cannot run in a transaction (empty: it can)
    transaction_control: bool  # contains BEGIN/COMMIT/... of its own

    @property
    def transactional(self) -> bool:
        return not self.non_transactional and not self.transaction_control


def _scan(sql: str) -> list[tuple[str, str]]:
    """Split into statements; each is (original text, code with quoted parts blanked)."""
    out: list[tuple[str, str]] = []
    start = 0
    code: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        nxt = sql[i + 1] if i + 1 < n else ""
        if ch == "-" and nxt == "-":
            end = sql.find("\n", i)
            i = n if end < 0 else end
            code.append(" ")
            continue
        if ch == "/" and nxt == "*":
            depth, i = 1, i + 2  # PostgreSQL block comments nest
            while i < n and depth:
                if sql.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif sql.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            code.append(" ")
            continue
        if ch in "'\"":
            # E'...' strings allow backslash escapes; '' / "" double the quote anywhere.
            backslash = (
                ch == "'"
                and i > 0
                and sql[i - 1] in "eE"
                and (i < 2 or not (sql[i - 2].isalnum() or sql[i - 2] == "_"))
            )
            i += 1
            while i < n:
                if backslash and sql[i] == "\\":
                    i += 2
                    continue
                if sql[i] == ch:
                    if i + 1 < n and sql[i + 1] == ch:
                        i += 2
                        continue
                    break
                i += 1
            i += 1
            code.append(" " if ch == "'" else '""')
            continue
        if ch == "$":
            tag = _DOLLAR_TAG.match(sql, i)
            # "$1" is a parameter, and "a$b$" an identifier: only a free-standing tag quotes.
            prev = sql[i - 1] if i else ""
            if tag and not (prev.isalnum() or prev == "_"):
                end = sql.find(tag.group(0), tag.end())
                i = n if end < 0 else end + len(tag.group(0))
                code.append(" ")
                continue
        if ch == ";":
            out.append((sql[start:i], "".join(code)))
            code = []
            start = i + 1
            i += 1
            continue
        code.append(ch)
        i += 1
    out.append((sql[start:], "".join(code)))
    return [(text, c) for text, c in out if c.strip()]


def split_statements(sql: str) -> list[str]:
    """The script's statements in order, without empty ones (comment-only pieces)."""
    return [text.strip() for text, _ in _scan(sql)]


def analyse(sql: str) -> ScriptInfo:
    pieces = _scan(sql)
    reasons: list[str] = []
    if NO_TRANSACTION_MARKER.search(sql):
        reasons.append("marked '-- remediator: no-transaction'")
    control = False
    for _, code in pieces:
        for pattern, why in _NON_TRANSACTIONAL:
            if pattern.search(code) and why not in reasons:
                reasons.append(why)
        if _TRANSACTION_CONTROL.match(code):
            control = True
    return ScriptInfo(
        statements=tuple(text.strip() for text, _ in pieces),
        non_transactional=tuple(reasons),
        transaction_control=control,
    )
