"""Durable state behind the journal ports: SQLite (embedded default) or PostgreSQL
(several replicas on one database)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from remediator.domain.errors import ConfigError
from remediator.domain.failpoints import NO_FAILPOINTS, Failpoints
from remediator.ports import Journal

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def journal_from_url(
    url: str | SecretStr,
    *,
    max_batch: int = 5000,
    call_timeout_seconds: float | None = None,
    prune_batch_size: int | None = None,
    pool_size: int | None = None,
    instance: str | None = None,
    failpoints: Failpoints = NO_FAILPOINTS,
) -> Journal:
    """The journal a URL names: ``sqlite:///PATH`` or ``postgresql://...`` (a secret:
    never shown with its password). Options left None take the journal's default;
    ``pool_size`` (connections at most) applies to PostgreSQL only."""
    raw = url.get_secret_value() if isinstance(url, SecretStr) else url
    options: dict[str, Any] = {
        name: value
        for name, value in (
            ("call_timeout_seconds", call_timeout_seconds),
            ("prune_batch_size", prune_batch_size),
        )
        if value is not None
    }
    # Each backend is imported only when used (asyncpg is not loaded for SQLite).
    if raw.startswith("sqlite:///"):
        from pathlib import Path

        from remediator.journal.sqlite import SqliteJournal

        return SqliteJournal(
            path=Path(raw.removeprefix("sqlite:///")),
            max_batch=max_batch,
            instance=instance,
            failpoints=failpoints,
            **options,
        )
    if raw.startswith(POSTGRES_SCHEMES):
        from remediator.journal.postgres import PostgresJournal

        if pool_size is not None:
            options["pool_size"] = pool_size
        return PostgresJournal(
            dsn=SecretStr(raw),
            max_batch=max_batch,
            instance=instance,
            failpoints=failpoints,
            **options,
        )
    raise ConfigError(
        f"journal URL: unsupported scheme {_scheme(raw)!r} "
        "(use sqlite:///PATH or postgresql://USER@HOST/DB)"
    )


def _scheme(url: str) -> str:
    # Only the scheme: the rest may hold a password.
    try:
        return urlsplit(url).scheme
    except ValueError:
        return ""


__all__ = ["journal_from_url"]
