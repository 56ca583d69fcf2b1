"""A migration revert with a verified backup first, one at a time per service.

``revert_with_backup`` does, in order:

1. take the service's lock in this process (:class:`ServiceLocks`) and in PostgreSQL
   (``pg_try_advisory_lock(hashtext('remediator:' || service))`` on a connection held
   for the whole revert), so two daemon replicas never revert one database at once;
   a second request waits up to ``lock_wait_s`` and is then refused (``RevertBusy``);
2. read the runner's status and work out the version the revert must end at;
3. ``pg_dump`` and verify the archive; without a verified backup the revert is refused
   unless ``allow_without_backup``;
4. revert (each step in a transaction where PostgreSQL allows it);
5. validate: the state is the target, no invalid indexes, no NOT VALID constraints,
   the configured integrity queries.

Failures before anything changed (busy, unknown target, backup refused) raise
``TemporaryError``/``PermanentError``. From the revert on, the outcome is returned
(``failed``, ``needs_human`` when validation fails, ``succeeded``) so the journal gets
the backup and what was reverted either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import asyncpg
from pydantic import SecretStr

from remediator.connectors.postgres.backup import Backup, backup, verify_backup
from remediator.connectors.postgres.dsn import close_quietly, connect, password_of
from remediator.connectors.postgres.errors import (
    BackupError,
    MigrationFailed,
    MigrationRetryable,
    RevertBusy,
    map_exception,
)
from remediator.connectors.postgres.model import (
    BASE,
    MigrationRunner,
    MigrationStatus,
    RevertResult,
)
from remediator.connectors.postgres.validate import IntegrityQuery, ValidationReport, validate
from remediator.domain.errors import PermanentError, RemediatorError, TemporaryError
from remediator.domain.lifecycle import RemediationStatus

__all__ = [
    "MigrationRunner",
    "MigrationStatus",
    "RevertOutcome",
    "RevertResult",
    "ServiceLocks",
    "advisory_lock",
    "lock_key",
    "revert_with_backup",
]

log = logging.getLogger(__name__)

_POLL_S = 0.25


def lock_key(service: str) -> str:
    """The text hashed into the advisory lock key (shared with other tools by contract)."""
    return f"remediator:{service}"


class ServiceLocks:
    """Per-service locks for one process: one revert of a service at a time.

    Create one per daemon and share it between every caller; the advisory lock covers
    other processes.
    """

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._holders: dict[str, str] = {}

    def busy(self, service: str) -> str | None:
        """What holds the service's lock, or None."""
        return self._holders.get(service)

    @contextlib.asynccontextmanager
    async def hold(self, service: str, *, wait_s: float, purpose: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(service, asyncio.Lock())
        if lock.locked() and wait_s <= 0:
            raise RevertBusy(f"{service}: {self._holders.get(service, 'a revert')} is running")
        try:
            async with asyncio.timeout(max(wait_s, 0.0) or None):
                await lock.acquire()
        except TimeoutError:
            holder = self._holders.get(service, "a revert")
            raise RevertBusy(
                f"{service}: {holder} is still running after waiting {wait_s:g}s",
                delay=max(wait_s, 5.0),
            ) from None
        self._holders[service] = purpose
        try:
            yield
        finally:
            self._holders.pop(service, None)
            lock.release()


_HOLDER = """
SELECT a.pid, a.application_name, a.backend_start
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid = ((hashtext($1)::bigint >> 32) & 4294967295)::oid
  AND l.objid = (hashtext($1)::bigint & 4294967295)::oid
LIMIT 1
"""


@contextlib.asynccontextmanager
async def advisory_lock(
    *, dsn: SecretStr, service: str, wait_s: float, connect_timeout_s: float = 10.0
) -> AsyncIterator[None]:
    """Hold ``pg_advisory_lock(hashtext('remediator:<service>'))`` for the block.

    Session-level, on a connection of its own: if this process dies, PostgreSQL drops
    the connection and the lock with it, so a crashed replica never blocks reverts.
    """
    secret = password_of(dsn)
    key = lock_key(service)
    conn = await connect(
        dsn,
        what=f"{service}: revert lock",
        timeout_s=connect_timeout_s,
        # Shown in pg_stat_activity: who holds the lock, for the refusal message.
        application_name=f"remediator revert {service}",
    )
    try:
        deadline = time.monotonic() + max(wait_s, 0.0)
        while not await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", key):
            if time.monotonic() >= deadline:
                row = await conn.fetchrow(_HOLDER, key)
                who = (
                    f"backend pid {row['pid']} ({row['application_name'] or 'no name'}, "
                    f"since {row['backend_start']:%Y-%m-%d %H:%M:%S%z})"
                    if row
                    else "another session"
                )
                raise RevertBusy(
                    f"{service}: another process holds the revert lock: {who}",
                    delay=max(wait_s, 5.0),
                )
            await asyncio.sleep(_POLL_S)
    except asyncpg.PostgresError as exc:
        await close_quietly(conn)
        raise map_exception(exc, what=f"{service}: revert lock", secret=secret) from exc
    except BaseException:
        await close_quietly(conn)
        raise
    try:
        yield
    finally:
        with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", key)
        await close_quietly(conn)


@dataclass(frozen=True, slots=True, kw_only=True)
class RevertOutcome:
    service: str
    runner: str  # the runner's kind
    status: RemediationStatus  # succeeded | failed | needs_human (validation failed)
    requested: str | None  # the target asked for (None: the last migration)
    target: str | None  # the version the database must be at afterwards (None: base)
    before: MigrationStatus
    after: MigrationStatus | None
    reverted: tuple[str, ...]  # newest first
    without_transaction: tuple[str, ...] = ()
    backup: Backup | None = None
    backup_error: str | None = None  # why there is no backup (allowed by the rule)
    validation: ValidationReport | None = None
    error: str | None = None
    retryable: bool = False  # the error was temporary
    started_at: datetime
    timings: Mapping[str, float] = field(default_factory=dict)  # seconds per phase

    def to_record(self) -> dict[str, Any]:
        """JSON-able for the journal; holds no DSN."""
        return {
            "service": self.service,
            "runner": self.runner,
            "status": self.status.value,
            "requested": self.requested,
            "target": self.target or BASE,
            "before": self.before.to_record(),
            "after": self.after.to_record() if self.after else None,
            "reverted": list(self.reverted),
            "without_transaction": list(self.without_transaction),
            "backup": self.backup.to_record() if self.backup else None,
            "backup_error": self.backup_error,
            "validation": self.validation.to_record() if self.validation else None,
            "error": self.error,
            "retryable": self.retryable,
            "started_at": self.started_at.isoformat(),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }


def _target(before: MigrationStatus, requested: str | None, service: str) -> str | None:
    if requested is None:
        if not before.applied:
            raise PermanentError(f"{service}: no applied migration to revert")
        return before.applied[-2] if len(before.applied) > 1 else None
    try:
        found = before.find(requested)
    except LookupError as exc:
        raise PermanentError(f"{service}: revert to {requested}: {exc}") from exc
    if found is not None and found not in before.applied:
        raise PermanentError(f"{service}: revert to {requested}: {found} is not applied")
    return found


async def revert_with_backup(
    *,
    service: str,
    runner: MigrationRunner,
    dsn: SecretStr,
    backup_dir: Path,
    target: str | None,
    allow_without_backup: bool = False,
    locks: ServiceLocks,
    lock_wait_s: float = 0.0,
    integrity_queries: Sequence[IntegrityQuery] = (),
    clock: Callable[[], datetime],
    bindir: Path | None = None,
    backup_timeout_s: float = 3600.0,
) -> RevertOutcome:
    """Back up, revert to ``target`` (None: the last migration), validate; see the module doc."""
    started_at = clock()
    t0 = time.monotonic()
    timings: dict[str, float] = {}
    purpose = f"revert to {target or 'previous'} since {started_at:%H:%M:%S}"
    async with (
        locks.hold(service, wait_s=lock_wait_s, purpose=purpose),
        advisory_lock(dsn=dsn, service=service, wait_s=lock_wait_s),
    ):
        timings["lock_wait"] = time.monotonic() - t0
        before = await runner.status()
        expected = _target(before, target, service)
        planned = before.after(expected)
        log.info(
            "revert of %s (%s): at %s, to %s, reverting %s",
            service,
            runner.kind,
            before.current or BASE,
            expected or BASE,
            ", ".join(planned) or "nothing",
        )

        taken: Backup | None = None
        backup_error: str | None = None
        if planned:
            t = time.monotonic()
            try:
                taken = await backup(
                    dsn=dsn,
                    directory=backup_dir,
                    service=service,
                    clock=clock,
                    bindir=bindir,
                    timeout_s=backup_timeout_s,
                )
                await verify_backup(taken, bindir=bindir)
            except RemediatorError as exc:
                if not allow_without_backup:
                    message = f"{service}: revert refused: no verified backup: {exc}"
                    if isinstance(exc, TemporaryError):
                        raise TemporaryError(message, delay=exc.delay) from exc
                    raise BackupError(message) from exc
                taken, backup_error = None, str(exc)
                log.warning("revert of %s continues without a backup (allowed): %s", service, exc)
            timings["backup"] = time.monotonic() - t
            if taken:
                log.info(
                    "revert of %s: backup %s verified (%d bytes, sha256 %s, %.1fs)",
                    service,
                    taken.id,
                    taken.size_bytes,
                    taken.sha256[:12],
                    taken.duration_s,
                )

        t = time.monotonic()
        result: RevertResult | None = None
        error: str | None = None
        retryable = False
        reverted: tuple[str, ...] = ()
        if planned:
            try:
                if target is None:
                    result = await runner.revert_last()
                else:
                    result = await runner.revert_to(target)
                reverted = result.reverted
            except (MigrationFailed, MigrationRetryable) as exc:
                error, reverted = str(exc), exc.reverted
                retryable = isinstance(exc, TemporaryError)
            except RemediatorError as exc:
                error, retryable = str(exc), isinstance(exc, TemporaryError)
        timings["revert"] = time.monotonic() - t
        if error:
            log.error("revert of %s failed after reverting %s: %s", service, reverted, error)

        t = time.monotonic()
        after: MigrationStatus | None = None
        report: ValidationReport | None = None
        unchecked: str | None = None
        try:
            after = await runner.status()
            report = await validate(
                dsn=dsn,
                expected_version=expected,
                actual_version=after.current,
                integrity_queries=integrity_queries,
            )
        except RemediatorError as exc:
            unchecked = f"validation not run: {exc}"
        timings["validate"] = time.monotonic() - t
    timings["total"] = time.monotonic() - t0

    if error:
        status = RemediationStatus.FAILED
    elif report is None or not report.passed:
        status = RemediationStatus.NEEDS_HUMAN  # reverted, but not as it should be (or unknown)
    else:
        status = RemediationStatus.SUCCEEDED
    if unchecked:
        error = f"{error}; {unchecked}" if error else unchecked
    outcome = RevertOutcome(
        service=service,
        runner=runner.kind,
        status=status,
        requested=target,
        target=expected,
        before=before,
        after=after,
        reverted=reverted,
        without_transaction=result.without_transaction if result else (),
        backup=taken,
        backup_error=backup_error,
        validation=report,
        error=error,
        retryable=retryable,
        started_at=started_at,
        timings=MappingProxyType(timings),  # frozen all the way down
    )
    log.info(
        "revert of %s: %s, reverted %s, now at %s",
        service,
        status.value,
        ", ".join(reverted) or "nothing",
        (after.current if after else None) or BASE,
    )
    return outcome
