"""The executor's StepRunner for database steps: ``backup_database`` and ``revert_migration``.

A ``revert_migration`` plan is ``backup_database`` (optionally the application's
rollback steps) then ``revert_migration``. The backup step takes and verifies a
``pg_dump`` and returns its record; the revert step finds that record in the plan's
``context``, verifies the archive again (it may have sat on disk while the application
rolled back) and only then reverts. Without a verified backup the revert is refused
unless the rule set ``allow_without_backup``.

Both steps hold the service's lock (this process: :class:`ServiceLocks`; every process:
the PostgreSQL advisory lock), so a second revert of the service (another replica, the
operator CLI) waits ``lock_wait`` and is then refused with the holder named.

Settings come from the service's ``database`` block in the catalog; the DSN is resolved
on every step (a rotated Secret is picked up) and never leaves this module unredacted.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
from pydantic import SecretStr

from remediator.connectors.postgres.alembic_runner import AlembicRunner
from remediator.connectors.postgres.backup import Backup, backup, verify_backup
from remediator.connectors.postgres.dsn import SecretSource, close_quietly, connect, resolve_dsn
from remediator.connectors.postgres.errors import (
    BackupError,
    MigrationFailed,
    MigrationRetryable,
    map_exception,
)
from remediator.connectors.postgres.model import BASE, MigrationRunner, MigrationStatus
from remediator.connectors.postgres.runner import ServiceLocks, advisory_lock
from remediator.connectors.postgres.sqldir import SqlDirRunner, parse_table_name
from remediator.connectors.postgres.validate import IntegrityQuery, validate
from remediator.domain.errors import ConfigError, PermanentError, RemediatorError
from remediator.domain.plans import Step, StepKind
from remediator.domain.rules import RulePack
from remediator.domain.rules.model import DatabaseSpec, ServiceSpec
from remediator.domain.steps import BackupDatabaseStep, RevertMigrationStep
from remediator.ports import NeedsHuman

__all__ = [
    "DEFAULT_BACKUP_ROOT",
    "JobRunnerFactory",
    "PostgresStepRunner",
    "ServiceDatabase",
    "backup_from_context",
    "revert_target",
    "table_status",
]

log = logging.getLogger(__name__)

DEFAULT_BACKUP_ROOT = Path("/var/lib/remediator/backups")
KINDS = frozenset({StepKind.BACKUP_DATABASE, StepKind.REVERT_MIGRATION})
# Another backup is harmless; a revert interrupted half-way is not run again blindly.
RESUMABLE = frozenset({StepKind.BACKUP_DATABASE})
_OUTPUT_CHARS = 8000  # tool/Job output kept in the record (its tail)

# (service, its catalog entry, its database block, DSN) -> the Job runner; injected by
# the runtime so this connector needs no Kubernetes client of its own.
JobRunnerFactory = Callable[[str, ServiceSpec, DatabaseSpec, SecretStr], MigrationRunner]


class ServiceDatabase:
    """One service's database as the catalog describes it: DSN, runner, backups, checks.

    Shared by the step runner and the operator CLI, so both act the same way.
    """

    def __init__(
        self,
        *,
        service: str,
        spec: ServiceSpec,
        backup_root: Path,
        secret_source: SecretSource | None = None,
        job_runners: JobRunnerFactory | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        if spec.database is None:
            raise PermanentError(f"service {service!r} has no database settings in the catalog")
        if spec.database.engine != "postgres":
            raise PermanentError(
                f"service {service!r}: database engine {spec.database.engine} is not supported"
            )
        self.service = service
        self.spec = spec
        self.database: DatabaseSpec = spec.database
        self.backup_dir = (
            Path(self.database.backup_dir) if self.database.backup_dir else backup_root
        )
        self._secret_source = secret_source
        self._job_runners = job_runners
        self._environ = environ

    @classmethod
    def from_pack(
        cls,
        pack: RulePack,
        service: str,
        *,
        backup_root: Path,
        secret_source: SecretSource | None = None,
        job_runners: JobRunnerFactory | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> ServiceDatabase:
        spec = pack.services.get(service)
        if spec is None:
            raise PermanentError(f"service {service!r} is not in the catalog")
        return cls(
            service=service,
            spec=spec,
            backup_root=backup_root,
            secret_source=secret_source,
            job_runners=job_runners,
            environ=environ,
        )

    @property
    def lock_wait_s(self) -> float:
        return self.database.lock_wait.total_seconds()

    @property
    def integrity_queries(self) -> tuple[IntegrityQuery, ...]:
        return tuple(
            IntegrityQuery(name=q.name, sql=q.sql, expect_rows=q.expect_rows)
            for q in self.database.integrity_queries
        )

    async def dsn(self) -> SecretStr:
        d = self.database
        # A Secret is read as "<namespace>/<name>": the service's own namespace.
        secret = f"{self.spec.namespace}/{d.dsn_secret}" if d.dsn_secret else None
        return await resolve_dsn(
            env=d.dsn_env,
            file=Path(d.dsn_file) if d.dsn_file else None,
            secret=secret,
            secret_source=self._secret_source,
            environ=self._environ,
        )

    def runner(self, dsn: SecretStr) -> MigrationRunner:
        d = self.database
        if d.runner == "sqldir":
            if d.migrations_dir is None:
                raise ConfigError(f"service {self.service!r}: database.migrations_dir is not set")
            return SqlDirRunner(
                dsn=dsn,
                directory=Path(d.migrations_dir),
                table=d.migrations_table,
                allow_non_transactional=d.allow_non_transactional,
            )
        if d.runner == "alembic":
            assert d.alembic_dir is not None  # the model requires it for this runner
            return AlembicRunner(
                dsn=dsn,
                directory=Path(d.alembic_dir),
                command=d.alembic_command,
                driver=d.alembic_driver,
            )
        if self._job_runners is None:
            raise ConfigError(
                f"service {self.service!r}: runner job needs Kubernetes, which is not configured"
            )
        return self._job_runners(self.service, self.spec, d, dsn)

    @contextlib.asynccontextmanager
    async def locked(
        self, dsn: SecretStr, locks: ServiceLocks, *, purpose: str
    ) -> AsyncIterator[None]:
        """Both locks of the service: this process's, then every process's (PostgreSQL)."""
        async with (
            locks.hold(self.service, wait_s=self.lock_wait_s, purpose=purpose),
            advisory_lock(dsn=dsn, service=self.service, wait_s=self.lock_wait_s),
        ):
            yield

    async def take_backup(self, dsn: SecretStr, *, clock: Callable[[], datetime]) -> Backup:
        taken = await backup(
            dsn=dsn,
            directory=self.backup_dir,
            service=self.service,
            clock=clock,
            timeout_s=self.database.backup_timeout.total_seconds(),
        )
        await verify_backup(taken)
        return taken


_VERSION_NUMBER = re.compile(r"^(\d+)")


async def table_status(*, dsn: SecretStr, table: str, kind: str = "job") -> MigrationStatus:
    """The applied versions in a migrations table, by number (runners without files here,
    such as the Job runner, whose migrations live in the service's image)."""
    schema, name = parse_table_name(table)
    qualified = f'"{schema}"."{name}"' if schema else f'"{name}"'
    conn = await connect(dsn, what=f"migration state in {table}")
    try:
        # Identifiers only (parse_table_name checked them), quoted: no injection.
        rows = await conn.fetch(f"SELECT version::text AS v FROM {qualified}")
    except asyncpg.UndefinedTableError:
        rows = []
    except asyncpg.PostgresError as exc:
        raise map_exception(exc, what=f"migration state in {table}", secret=None) from exc
    finally:
        await close_quietly(conn)

    def order(version: str) -> tuple[int, str]:
        match = _VERSION_NUMBER.match(version)
        return (int(match[1]) if match else 1 << 62, version)

    return MigrationStatus(kind=kind, applied=tuple(sorted((r["v"] for r in rows), key=order)))


def revert_target(status: MigrationStatus, migration: str | None) -> tuple[str | None, bool]:
    """(version to end at, whether anything must be reverted) for a failed migration.

    The failed migration and everything after it go; an unnamed one means the last.
    A failed migration that is not applied (its transaction rolled back) leaves nothing
    to revert: the schema already is where it was.
    """
    if not status.applied:
        return None, False
    if not migration:
        return (status.applied[-2] if len(status.applied) > 1 else None), True
    try:
        found = status.find(migration)
    except LookupError as exc:
        raise NeedsHuman(
            f"migration {migration!r} is not known to the {status.kind} runner ({exc}); "
            "revert by hand with `remediator db revert --to VERSION`"
        ) from exc
    if found is None or found not in status.applied:
        return status.current, False
    index = status.applied.index(found)
    return (status.applied[index - 1] if index > 0 else None), True


def backup_from_context(context: Mapping[str, Any], *, service: str) -> Backup | None:
    """The newest backup an earlier step of this plan recorded for the service."""
    for detail in reversed(list(context.values())):
        record = detail.get("backup") if isinstance(detail, Mapping) else None
        if isinstance(record, Mapping) and record.get("service") == service:
            return Backup.from_record(dict(record), path=Path(str(record["path"])))
    return None


class PostgresStepRunner:
    """StepRunner for BACKUP_DATABASE and REVERT_MIGRATION (other kinds: PermanentError)."""

    def __init__(
        self,
        *,
        pack: RulePack,
        backup_root: Path,
        locks: ServiceLocks,
        clock: Callable[[], datetime],
        secret_source: SecretSource | None = None,
        job_runners: JobRunnerFactory | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._pack = pack
        self._backup_root = backup_root
        self._locks = locks
        self._clock = clock
        self._secret_source = secret_source
        self._job_runners = job_runners
        self._environ = environ

    def resumable(self, kind: StepKind) -> bool:
        return kind in RESUMABLE

    def database(self, service: str) -> ServiceDatabase:
        return ServiceDatabase.from_pack(
            self._pack,
            service,
            backup_root=self._backup_root,
            secret_source=self._secret_source,
            job_runners=self._job_runners,
            environ=self._environ,
        )

    async def run(
        self, step: Step, *, service: str, dry_run: bool, context: dict[str, Any]
    ) -> dict[str, Any]:
        db = self.database(service)
        dsn = await db.dsn()
        runner = db.runner(dsn)
        if isinstance(step, BackupDatabaseStep):
            return await self._backup(db, dsn, runner, dry_run=dry_run)
        if isinstance(step, RevertMigrationStep):
            return await self._revert(
                db,
                dsn,
                runner,
                migration=step.params.migration,
                allow_without_backup=step.params.allow_without_backup,
                dry_run=dry_run,
                context=context,
            )
        raise PermanentError(f"the PostgreSQL runner does not handle {step.kind.value} steps")

    async def _backup(
        self, db: ServiceDatabase, dsn: SecretStr, runner: MigrationRunner, *, dry_run: bool
    ) -> dict[str, Any]:
        if dry_run:
            status = await runner.status()
            return {
                "dry_run": True,
                "would": f"pg_dump the database of {db.service} into {db.backup_dir}",
                "status": status.to_record(),
            }
        # Under the lock: a backup taken while another revert runs would capture it
        # half-way.
        async with db.locked(dsn, self._locks, purpose=f"backup since {self._clock():%H:%M:%S}"):
            taken = await db.take_backup(dsn, clock=self._clock)
        log.info(
            "%s: backup %s verified (%d bytes, sha256 %s, %.1fs)",
            db.service,
            taken.id,
            taken.size_bytes,
            taken.sha256[:12],
            taken.duration_s,
        )
        return {"backup": taken.to_record(), "verified": True}

    async def _revert(
        self,
        db: ServiceDatabase,
        dsn: SecretStr,
        runner: MigrationRunner,
        *,
        migration: str | None,
        allow_without_backup: bool,
        dry_run: bool,
        context: Mapping[str, Any],
    ) -> dict[str, Any]:
        if dry_run:
            before = await runner.status()
            target, needed = revert_target(before, migration)
            return {
                "dry_run": True,
                "runner": runner.kind,
                "migration": migration,
                "status": before.to_record(),
                "target": target or BASE,
                "would_revert": list(before.after(target)) if needed else [],
            }

        taken = backup_from_context(context, service=db.service)
        backup_error: str | None = None
        if taken is None:
            backup_error = "no backup_database step before this one recorded a backup"
        else:
            try:
                await verify_backup(taken)  # still there, still the bytes that were dumped
            except RemediatorError as exc:
                backup_error, taken = f"backup {taken.id} no longer verifies: {exc}", None
        if taken is None:
            if not allow_without_backup:
                raise BackupError(
                    f"{db.service}: revert refused: no verified backup: {backup_error}"
                )
            log.warning("%s: reverting without a backup (the rule allows it): %s",
                        db.service, backup_error)  # fmt: skip

        started = self._clock()
        t0 = time.monotonic()
        timings: dict[str, float] = {}
        async with db.locked(dsn, self._locks, purpose=f"revert since {started:%H:%M:%S}"):
            timings["lock_wait"] = time.monotonic() - t0
            before = await runner.status()
            target, needed = revert_target(before, migration)
            t = time.monotonic()
            result = None
            if needed:
                try:
                    result = (
                        await runner.revert_to(target or BASE)
                        if migration
                        else await runner.revert_last()
                    )
                except MigrationFailed as exc:
                    # The failing step rolled back; the plan fails and people are told.
                    what = exc.migration or migration or "the migration"
                    done = f" (already reverted: {', '.join(exc.reverted)})" if exc.reverted else ""
                    raise PermanentError(
                        f"{db.service}: reverting {what} failed{done}: {exc}"
                    ) from exc
                except MigrationRetryable:
                    raise  # TemporaryError: the executor retries the step
            timings["revert"] = time.monotonic() - t
            t = time.monotonic()
            after = await runner.status()
            report = await validate(
                dsn=dsn,
                expected_version=target,
                actual_version=after.current,
                integrity_queries=db.integrity_queries,
            )
            timings["validate"] = time.monotonic() - t
        timings["total"] = time.monotonic() - t0

        detail: dict[str, Any] = {
            "runner": runner.kind,
            "migration": migration,
            "target": target or BASE,
            "before": before.to_record(),
            "after": after.to_record(),
            "reverted": list(result.reverted) if result else [],
            "without_transaction": list(result.without_transaction) if result else [],
            "backup": taken.to_record() if taken else None,
            "backup_error": backup_error,
            "validation": report.to_record(),
            "output": result.output[-_OUTPUT_CHARS:] if result else "",
            "started_at": started.isoformat(),
            "timings": {k: round(v, 3) for k, v in timings.items()},
        }
        if not report.passed:
            failures = "; ".join(f"{c.name}: {c.detail}" for c in report.failures)
            # The executor keeps only the message of a failed step: name the backup too.
            raise NeedsHuman(
                f"{db.service}: reverted {', '.join(detail['reverted']) or 'nothing'} "
                f"(backup {taken.id if taken else 'none'}), now at {after.current or BASE}, "
                f"but validation failed: {failures}"
            )
        log.info("%s: reverted %s, now at %s", db.service,
                 ", ".join(detail["reverted"]) or "nothing", after.current or BASE)  # fmt: skip
        return detail
