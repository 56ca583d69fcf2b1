"""PostgreSQL and network failures mapped to TemporaryError / PermanentError.

What the server or the network may get over by itself is temporary: connection trouble,
too many connections, serialization failures and deadlocks, a server starting, shutting
down or failing over (a standby refusing writes), a statement past its deadline.
Everything else (a missing table, a failed constraint, bad credentials) needs a person.
"""

from __future__ import annotations

import asyncio

import asyncpg
from pydantic import SecretStr

from remediator.domain.errors import PermanentError, RemediatorError, TemporaryError
from remediator.journal.postgres.dsn import password_of, scrub

# SQLSTATE classes worth a retry: connection exception, transaction rollback
# (serialization failure, deadlock), insufficient resources (too many connections, disk
# full may clear), operator intervention (admin shutdown, cannot connect now, and
# query_canceled: our own statement_timeout, a deadline like the client's).
_TEMPORARY_CLASSES = frozenset({"08", "40", "53", "57"})
# Single codes outside those classes: lock_not_available, object_in_use, and
# read_only_sql_transaction (a failover left us on a standby for a moment).
_TEMPORARY_CODES = frozenset({"55P03", "55006", "25006"})
# Worth retrying at once inside the same call: the transaction lost a race.
RETRY_AT_ONCE = frozenset({"40001", "40P01"})

# The connection is unusable: cut (e.g. the server terminated it while idle, a
# failover), or in a protocol state asyncpg cannot continue from.
BROKEN_CONNECTION = (
    OSError,  # refused, reset, unreachable
    asyncpg.InterfaceError,  # e.g. "connection was closed in the middle of operation"
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InternalClientError,  # e.g. "cannot switch to state ..."
)
_NETWORK_ERRORS = (*BROKEN_CONNECTION, TimeoutError, asyncio.TimeoutError)


def sqlstate_of(exc: BaseException) -> str | None:
    code = getattr(exc, "sqlstate", None)
    return code if isinstance(code, str) else None


def is_temporary(exc: BaseException) -> bool:
    code = sqlstate_of(exc)
    if code:
        return code in _TEMPORARY_CODES or code[:2] in _TEMPORARY_CLASSES
    return isinstance(exc, _NETWORK_ERRORS)


def journal_error(exc: BaseException, *, what: str, dsn: SecretStr) -> RemediatorError:
    """Ours, naming ``what`` failed and why, with the DSN's password blanked."""
    if isinstance(exc, RemediatorError):
        return exc
    reason = str(exc) or type(exc).__name__
    if isinstance(exc, asyncpg.PostgresError):
        detail = getattr(exc, "detail", None)
        reason += f" (detail: {detail})" if detail else ""
    elif str(exc):
        reason = f"{type(exc).__name__}: {exc}"
    message = scrub(f"journal {what}: {reason}", dsn)
    if is_temporary(exc):
        return TemporaryError(message, delay=1.0)
    return PermanentError(message)


def safe_cause(exc: BaseException, dsn: SecretStr) -> BaseException | None:
    """``exc`` to chain with ``raise ... from``, or None when its text holds the password
    (a chained cause is printed with the traceback)."""
    password = password_of(dsn)
    if password and password in str(exc):
        return None
    return exc
