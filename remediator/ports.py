"""The interfaces the engine and ingress depend on; journal and connectors implement them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from remediator.domain.signals import Signal


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordResult:
    """What became of one signal handed to the journal."""

    signal_id: str
    duplicate: bool  # the key was already journaled: nothing new was stored


@dataclass(frozen=True, slots=True, kw_only=True)
class SignalPage:
    items: Sequence[dict[str, Any]]
    next_cursor: str | None


class Journal(Protocol):
    """Durable state. Implementations: SQLite (embedded), PostgreSQL (HA, later).

    Every method raises ``TemporaryError`` when storage is unavailable for now and
    ``PermanentError`` for requests that can never succeed.
    """

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def record_signals(self, signals: Sequence[Signal]) -> list[RecordResult]:
        """Store each signal whose key is new; durable when this returns.

        Results are in input order. A key seen before (earlier or within the same
        call) is a duplicate and is not stored again.
        """
        ...

    async def list_signals(
        self, *, service: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> SignalPage:
        """Newest first. ``cursor`` is the ``next_cursor`` of the previous page."""
        ...

    async def check_writable(self) -> None:
        """Raise TemporaryError unless a write would succeed now (for /readyz)."""
        ...

    async def prune(self, *, older_than_seconds: float) -> int:
        """Forget signals (and their keys) received longer ago than this; return how many."""
        ...
