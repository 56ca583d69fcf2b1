"""PostgreSQL journal: the journal's roles on one database several replicas share."""

from __future__ import annotations

from remediator.journal.postgres.dsn import is_postgres_url, redact
from remediator.journal.postgres.journal import (
    DEFAULT_CALL_TIMEOUT_SECONDS,
    DEFAULT_POOL_SIZE,
    PostgresJournal,
)

__all__ = [
    "DEFAULT_CALL_TIMEOUT_SECONDS",
    "DEFAULT_POOL_SIZE",
    "PostgresJournal",
    "is_postgres_url",
    "redact",
]
