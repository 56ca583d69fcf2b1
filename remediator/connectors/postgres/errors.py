"""PostgreSQL and tool failures mapped to remediator's TemporaryError/PermanentError.

The split follows SQLSTATE classes: what the server or the network may get over by
itself (connection trouble, too many connections, serialization failures, lock
timeouts, a server starting or shutting down) is temporary; everything else (syntax
errors, missing objects, failed constraints, bad credentials) needs a person.
"""

from __future__ import annotations

import asyncio

import asyncpg

from remediator.domain.errors import PermanentError, RemediatorError, TemporaryError

__all__ = [
    "BackupError",
    "MigrationFailed",
    "MigrationRetryable",
    "NonTransactionalMigration",
    "RevertBusy",
    "is_temporary_sqlstate",
    "map_exception",
    "safe_cause",
    "sqlstate_of",
]

# Whole SQLSTATE classes worth a retry: connection exception, transaction rollback
# (serialization failure, deadlock), insufficient resources (too many connections,
# disk full may clear), operator intervention (admin shutdown, starting up).
_TEMPORARY_CLASSES = frozenset({"08", "40", "53", "57"})
# Single codes outside those classes: lock_not_available (lock_timeout hit) and
# object_in_use (e.g. DROP DATABASE while connected).
_TEMPORARY_CODES = frozenset({"55P03", "55006"})
# ...and codes inside them that will not clear by waiting.
_PERMANENT_CODES = frozenset({"57014"})  # query_canceled: statement_timeout we were given


def is_temporary_sqlstate(sqlstate: str | None) -> bool:
    if not sqlstate:
        return False
    if sqlstate in _PERMANENT_CODES:
        return False
    return sqlstate in _TEMPORARY_CODES or sqlstate[:2] in _TEMPORARY_CLASSES


class BackupError(PermanentError):
    """No usable backup could be made or verified."""


class NonTransactionalMigration(PermanentError):
    """A down script that cannot run in a transaction, and that was not allowed."""

    def __init__(self, message: str, *, migration: str, reasons: tuple[str, ...]) -> None:
        super().__init__(message)
        self.migration = migration
        self.reasons = reasons


class MigrationFailed(PermanentError):
    """A migration step failed for good; ``reverted`` lists the steps done before it."""

    def __init__(
        self,
        message: str,
        *,
        migration: str | None,
        reverted: tuple[str, ...] = (),
        sqlstate: str | None = None,
    ) -> None:
        super().__init__(message)
        self.migration = migration
        self.reverted = reverted
        self.sqlstate = sqlstate


class MigrationRetryable(TemporaryError):
    """A migration step failed in a way worth retrying (lock timeout, lost connection)."""

    def __init__(
        self,
        message: str,
        *,
        migration: str | None,
        reverted: tuple[str, ...] = (),
        sqlstate: str | None = None,
        delay: float = 5.0,
    ) -> None:
        super().__init__(message, delay=delay)
        self.migration = migration
        self.reverted = reverted
        self.sqlstate = sqlstate


class RevertBusy(TemporaryError):
    """Another revert of the same service holds the lock (here or in another replica)."""


def _server_message(exc: BaseException) -> str:
    if isinstance(exc, asyncpg.PostgresError):
        text = str(exc)
        detail = getattr(exc, "detail", None)
        hint = getattr(exc, "hint", None)
        if detail:
            text += f" (detail: {detail})"
        if hint:
            text += f" (hint: {hint})"
        return text
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def sqlstate_of(exc: BaseException) -> str | None:
    code = getattr(exc, "sqlstate", None)
    return code if isinstance(code, str) else None


def map_exception(
    exc: BaseException, *, what: str, secret: str | None = None, delay: float = 5.0
) -> RemediatorError:
    """A TemporaryError or PermanentError saying ``what`` failed and the server's message.

    ``secret`` (the DSN's password) is blanked from the message: some driver errors
    echo connection parameters.
    """
    if isinstance(exc, RemediatorError):
        return exc
    message = f"{what}: {_server_message(exc)}"
    if secret:
        message = message.replace(secret, "***")
    code = sqlstate_of(exc)
    temporary = (
        is_temporary_sqlstate(code)
        if code
        else isinstance(
            exc,
            OSError  # connection refused/reset, unreachable host
            | TimeoutError
            | asyncio.TimeoutError
            | asyncpg.InterfaceError  # includes "connection was closed in the middle"
            | asyncpg.exceptions.ConnectionDoesNotExistError,
        )
    )
    return TemporaryError(message, delay=delay) if temporary else PermanentError(message)


def safe_cause(exc: BaseException, secret: str | None) -> BaseException | None:
    """``exc`` to chain with ``raise ... from``, or None when its text holds the secret.

    A chained cause is printed with the traceback; one that quotes the password would
    undo the scrubbing of our own message.
    """
    if secret and secret in str(exc):
        return None
    return exc
