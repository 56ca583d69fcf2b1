"""Durable state behind the ``Journal`` port: SQLite (embedded default)."""

from __future__ import annotations

from remediator.domain.errors import ConfigError
from remediator.journal.sqlite import SqliteJournal
from remediator.ports import Journal


def journal_from_url(url: str, *, max_batch: int = 5000) -> Journal:
    if url.startswith("sqlite:///"):
        from pathlib import Path

        return SqliteJournal(path=Path(url.removeprefix("sqlite:///")), max_batch=max_batch)
    raise ConfigError(f"journal URL {url!r}: unsupported scheme (use sqlite:///PATH)")


__all__ = ["SqliteJournal", "journal_from_url"]
