"""The daemon's retention task: prunes database backups and ConfigMap snapshots.

Every ``retention.interval_seconds`` (and once at start), for each catalog service: its
backups by ``retention.backups_keep`` / ``backups_keep_days``, its Deployment's config
snapshots by ``retention.config_snapshots_keep`` / ``config_snapshots_keep_days``. What a
remediation not over still needs is kept (see :mod:`remediator.domain.retention`); when
the journal cannot say what that is, no backup is pruned in that round. In dry-run
mode nothing is deleted: the round only logs what would go.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from remediator.connectors.kubernetes.configmaps import SnapshotRetention
from remediator.connectors.postgres.backup import BackupRetention, prune_backups
from remediator.connectors.postgres.steps import ServiceDatabase
from remediator.domain.errors import PermanentError, TemporaryError
from remediator.domain.lifecycle import Remediation
from remediator.domain.retention import OPEN_FOR_RETENTION, RetentionPolicy, backups_in_use
from remediator.domain.rules import RulePack
from remediator.ports import RemediationStore

__all__ = ["RetentionRound", "RetentionTask", "SnapshotPruner", "open_remediations"]

log = logging.getLogger(__name__)


class SnapshotPruner(Protocol):
    """The Kubernetes step runner's side of retention."""

    def services_with_config(self) -> list[str]: ...

    async def prune_config_snapshots(
        self, service: str, *, policy: RetentionPolicy, now: datetime, dry_run: bool
    ) -> SnapshotRetention: ...


@dataclass(slots=True)
class RetentionRound:
    backups: list[BackupRetention] = field(default_factory=list)
    snapshots: list[SnapshotRetention] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def open_remediations(journal: RemediationStore) -> list[Remediation]:
    """Every remediation not over, with its steps (what it backed up)."""
    found: list[Remediation] = []
    for status in sorted(OPEN_FOR_RETENTION):
        cursor: str | None = None
        while True:
            page = await journal.list_remediations(status=status, limit=200, cursor=cursor)
            for item in page.items:
                full = await journal.get_remediation(item.id)
                if full is not None:
                    found.append(full)
            cursor = page.next_cursor
            if cursor is None:
                break
    return found


class RetentionTask:
    def __init__(
        self,
        *,
        journal: RemediationStore,
        pack: RulePack,
        backup_root: Path,
        backup_policy: RetentionPolicy,
        snapshot_policy: RetentionPolicy,
        snapshots: SnapshotPruner | None,
        interval_seconds: float,
        dry_run: bool,
        clock: Callable[[], datetime],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._journal = journal
        self._pack = pack
        self._backup_root = backup_root
        self._backup_policy = backup_policy
        self._snapshot_policy = snapshot_policy
        self._snapshots = snapshots
        self._interval = interval_seconds
        self._dry_run = dry_run
        self._clock = clock
        self._sleep = sleep

    async def run(self) -> None:
        while True:
            await self.once()
            await self._sleep(self._interval)

    async def once(self) -> RetentionRound:
        done = RetentionRound()
        await self._backups(done)
        await self._config_snapshots(done)
        for error in done.errors:
            log.warning("retention: %s", error)
        return done

    async def _backups(self, done: RetentionRound) -> None:
        services = sorted(n for n, spec in self._pack.services.items() if spec.database)
        if not services:
            return
        try:
            in_use = backups_in_use(await open_remediations(self._journal))
        except (TemporaryError, PermanentError) as exc:
            done.errors.append(
                f"backups left alone: the journal cannot say which are in use: {exc}"
            )
            return
        now = self._clock()
        for service in services:
            try:
                folder = ServiceDatabase.from_pack(
                    self._pack, service, backup_root=self._backup_root
                ).backup_dir
                result = await asyncio.to_thread(
                    prune_backups, folder, service, policy=self._backup_policy, now=now,
                    in_use=in_use, dry_run=self._dry_run,
                )  # fmt: skip
            except (OSError, PermanentError) as exc:
                done.errors.append(f"backups of {service}: {exc}")
                continue
            done.backups.append(result)
            if result.pruned or result.leftovers:
                log.info("retention: %s %d backup(s) of %s (%s) and %d leftover file(s)",
                         "would prune" if self._dry_run else "pruned", len(result.pruned),
                         service, ", ".join(b.id for b in result.pruned) or "none",
                         len(result.leftovers))  # fmt: skip

    async def _config_snapshots(self, done: RetentionRound) -> None:
        if self._snapshots is None:
            return
        now = self._clock()
        for service in self._snapshots.services_with_config():
            try:
                result = await self._snapshots.prune_config_snapshots(
                    service, policy=self._snapshot_policy, now=now, dry_run=self._dry_run
                )
            except (TemporaryError, PermanentError) as exc:
                done.errors.append(f"config snapshots of {service}: {exc}")
                continue
            done.snapshots.append(result)
            gone = [rev for rev, verdict, _ in result.revisions if not verdict.kept]
            if gone:
                log.info("retention: %s config snapshots of %s revision(s) %s",
                         "would prune" if self._dry_run else "pruned", service,
                         ", ".join(map(str, gone)))  # fmt: skip
