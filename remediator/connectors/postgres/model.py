"""What every migration runner (SQL directory, Alembic, Kubernetes Job) reports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["BASE", "MigrationRunner", "MigrationStatus", "RevertResult"]

# Revert everything: the state before the first migration (Alembic's word for it).
BASE = "base"


@dataclass(frozen=True, slots=True, kw_only=True)
class MigrationStatus:
    kind: str  # "sqldir" | "alembic" | "job"
    applied: tuple[str, ...]  # oldest first; the last one is ``current``
    pending: tuple[str, ...] = ()  # known but not applied, oldest first
    unknown: tuple[str, ...] = ()  # applied in the database, absent from the code

    @property
    def current(self) -> str | None:
        """The newest applied version; None when nothing is applied ("base")."""
        return self.applied[-1] if self.applied else None

    def find(self, version: str) -> str | None:
        """The full version a request names: exact, or by its number ("002").

        Raises LookupError for a name that matches nothing or several versions.
        """
        if version == BASE:
            return None
        known = (*self.applied, *self.pending)
        if version in known:
            return version
        by_number = [v for v in known if v.split("_", 1)[0] == version]
        if len(by_number) == 1:
            return by_number[0]
        if by_number:
            raise LookupError(f"{version!r} is ambiguous: {', '.join(by_number)}")
        raise LookupError(f"no migration {version!r}")

    def after(self, version: str | None) -> tuple[str, ...]:
        """Applied versions newer than ``version`` (None = all), newest first."""
        if version is None:
            return tuple(reversed(self.applied))
        index = self.applied.index(version)  # ValueError: not applied
        return tuple(reversed(self.applied[index + 1 :]))

    def to_record(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "current": self.current,
            "applied": list(self.applied),
            "pending": list(self.pending),
            "unknown": list(self.unknown),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class RevertResult:
    reverted: tuple[str, ...]  # newest first, as they were reverted
    current: str | None  # the newest applied version afterwards (None: base)
    duration_s: float
    without_transaction: tuple[str, ...] = ()  # reverted outside a transaction (allowed)
    output: str = ""  # tool output worth keeping (Alembic, Job logs), secrets scrubbed


class MigrationRunner(Protocol):
    """One service's migrations. Implementations: SqlDirRunner, AlembicRunner, a Job runner.

    Errors: ``TemporaryError`` (e.g. ``MigrationRetryable``) when a retry may succeed,
    ``PermanentError`` (e.g. ``MigrationFailed``) otherwise; a failed step leaves the
    database as before that step, and the error's ``reverted`` lists the steps that had
    already been reverted.
    """

    @property
    def kind(self) -> str: ...

    async def status(self) -> MigrationStatus: ...

    async def revert_last(self) -> RevertResult: ...

    async def revert_to(self, version: str) -> RevertResult:
        """Revert every applied migration newer than ``version`` (``"base"``: all)."""
        ...
