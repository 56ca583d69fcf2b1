"""Durable state behind the ``Journal`` port: SQLite (embedded default)."""

from __future__ import annotations

from remediator.domain.errors import ConfigError
from remediator.domain.failpoints import NO_FAILPOINTS, Failpoints
from remediator.journal.sqlite import (
    DEFAULT_CALL_TIMEOUT_SECONDS,
    DEFAULT_PRUNE_BATCH_SIZE,
    SqliteJournal,
)
from remediator.ports import Journal


def journal_from_url(
    url: str,
    *,
    max_batch: int = 5000,
    call_timeout_seconds: float = DEFAULT_CALL_TIMEOUT_SECONDS,
    prune_batch_size: int = DEFAULT_PRUNE_BATCH_SIZE,
    instance: str | None = None,
    failpoints: Failpoints = NO_FAILPOINTS,
) -> Journal:
    """The journal at ``url``; ``instance`` names this process in heartbeats and
    claims (the executor's instance id)."""
    if url.startswith("sqlite:///"):
        from pathlib import Path

        return SqliteJournal(
            path=Path(url.removeprefix("sqlite:///")),
            max_batch=max_batch,
            call_timeout_seconds=call_timeout_seconds,
            prune_batch_size=prune_batch_size,
            instance=instance,
            failpoints=failpoints,
        )
    raise ConfigError(f"journal URL {url!r}: unsupported scheme (use sqlite:///PATH)")


__all__ = ["SqliteJournal", "journal_from_url"]
