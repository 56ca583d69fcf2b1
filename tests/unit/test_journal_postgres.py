"""The PostgreSQL journal's pure parts: which failures are temporary, what a DSN shows,
what text PostgreSQL cannot hold. (Its behaviour: tests/contract, and
tests/integration/journal/test_postgres_journal.py against a real server.)"""

from __future__ import annotations

import asyncpg
import orjson
import pytest
from pydantic import SecretStr

from remediator.domain.errors import PermanentError, TemporaryError
from remediator.journal.postgres.dsn import password_of, redact, scrub
from remediator.journal.postgres.errors import is_temporary, journal_error
from remediator.journal.postgres.rows import json_text, pg_text

DSN = SecretStr("postgresql://app:s3cr%40t@db.example:5432/journal?sslmode=require")


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.TooManyConnectionsError("too many"),
        asyncpg.exceptions.SerializationError("could not serialize"),
        asyncpg.exceptions.DeadlockDetectedError("deadlock"),
        asyncpg.exceptions.AdminShutdownError("terminating"),
        asyncpg.exceptions.CannotConnectNowError("starting up"),
        asyncpg.exceptions.ReadOnlySQLTransactionError("standby"),
        asyncpg.exceptions.QueryCanceledError("statement timeout"),
        asyncpg.exceptions.ConnectionDoesNotExistError("closed"),
        asyncpg.exceptions.InternalClientError("cannot switch to state 15"),
        ConnectionRefusedError(111, "refused"),
        TimeoutError(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_what_may_clear_by_itself_is_temporary(error: BaseException) -> None:
    assert is_temporary(error)
    assert isinstance(journal_error(error, what="intake", dsn=DSN), TemporaryError)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.UniqueViolationError("duplicate"),
        asyncpg.exceptions.UndefinedTableError("no table"),
        asyncpg.exceptions.InvalidPasswordError("password authentication failed"),
        asyncpg.exceptions.CheckViolationError("status"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_what_needs_a_person_is_permanent(error: BaseException) -> None:
    assert not is_temporary(error)
    mapped = journal_error(error, what="intake", dsn=DSN)
    assert isinstance(mapped, PermanentError)
    assert str(mapped).startswith("journal intake: ")


def test_an_error_quoting_the_dsn_or_its_password_is_scrubbed() -> None:
    error = ValueError(f"invalid DSN {DSN.get_secret_value()} (password s3cr@t)")
    shown = str(journal_error(error, what="connect", dsn=DSN))
    assert "s3cr" not in shown
    assert "postgresql://app:***@db.example:5432/journal?sslmode=require" in shown


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("postgresql://app:pw@db:5432/j", "postgresql://app:***@db:5432/j"),
        ("postgres://app@db/j?password=pw&sslmode=require",
         "postgres://app@db/j?password=***&sslmode=require"),
        ("postgresql://db/j", "postgresql://db/j"),
        ("just-a-password", "<unparseable DSN>"),
        ("postgresql://app:pw@[broken/j", "<unparseable DSN>"),
    ],
)  # fmt: skip
def test_a_dsn_is_shown_without_its_password(dsn: str, shown: str) -> None:
    assert redact(dsn) == shown


def test_the_password_is_found_wherever_it_is() -> None:
    assert password_of(DSN) == "s3cr@t"
    assert password_of("postgresql://u@h/d?password=x") == "x"
    assert password_of("postgresql://u@h/d") is None
    assert scrub("failed for s3cr%40t and s3cr@t", DSN) == "failed for *** and ***"


def test_nul_becomes_a_replacement_character_and_nothing_else_changes() -> None:
    assert pg_text("a\x00b") == "a\ufffdb"
    assert pg_text("plain") == "plain"
    assert pg_text(None) is None
    value = {"nul": "x\x00y", "literal": "a\\u0000b", "both": "\\\x00", "ü": "ß"}
    assert orjson.loads(json_text(value)) == {
        "nul": "x\ufffdy", "literal": "a\\u0000b", "both": "\\\ufffd", "ü": "ß",
    }  # fmt: skip
