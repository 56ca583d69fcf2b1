"""Retention of what remediator keeps to undo its own work: ConfigMap snapshots and
database backups. Pure: the connectors list and delete, this decides.

Per service (backups) or per Deployment (config snapshots, counted by revision), an
item is kept when it is among the newest ``keep_newest``, or younger than
``keep_days``, or needed by a remediation that is not over (running, waiting for
approval or people: its backup is what a person restores from). Everything else is
pruned. A policy never prunes the newest item, however old.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from remediator.domain.lifecycle import Remediation, RemediationStatus

__all__ = [
    "OPEN_FOR_RETENTION",
    "Judged",
    "RetentionPolicy",
    "Verdict",
    "backups_in_use",
    "judge",
]

# A remediation in one of these may still need what it backed up (or will restore).
OPEN_FOR_RETENTION = frozenset(
    {
        RemediationStatus.PLANNED,
        RemediationStatus.AWAITING_APPROVAL,
        RemediationStatus.RUNNING,
        RemediationStatus.NEEDS_HUMAN,
    }
)


class Verdict(StrEnum):
    NEWEST = "keep: among the newest"
    YOUNG = "keep: younger than the age limit"
    IN_USE = "keep: a remediation not over needs it"
    PRUNE = "prune"

    @property
    def kept(self) -> bool:
        return self is not Verdict.PRUNE


@dataclass(frozen=True, slots=True, kw_only=True)
class RetentionPolicy:
    keep_newest: int  # >= 1
    keep_days: float  # >= 0

    def __post_init__(self) -> None:
        if self.keep_newest < 1 or self.keep_days < 0:
            raise ValueError("keep_newest must be >= 1 and keep_days >= 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class Judged:
    key: str
    taken_at: datetime
    verdict: Verdict


def judge(
    items: Iterable[tuple[str, datetime]],
    *,
    policy: RetentionPolicy,
    now: datetime,
    in_use: Collection[str] = (),
) -> list[Judged]:
    """Each (key, taken_at) of one group, given newest first, with its verdict.

    The caller orders: backups by when they were taken, config snapshots by revision
    (a revision's number says which is newer; snapshots taken in one second do not).
    """
    horizon = now - timedelta(days=policy.keep_days)
    judged: list[Judged] = []
    for rank, (key, taken_at) in enumerate(items):
        if rank < policy.keep_newest:
            verdict = Verdict.NEWEST
        elif taken_at > horizon:
            verdict = Verdict.YOUNG
        elif key in in_use:
            verdict = Verdict.IN_USE
        else:
            verdict = Verdict.PRUNE
        judged.append(Judged(key=key, taken_at=taken_at, verdict=verdict))
    return judged


def backups_in_use(remediations: Sequence[Remediation]) -> set[str]:
    """Ids of the backups that steps of remediations not yet over recorded."""
    found: set[str] = set()
    for remediation in remediations:
        if remediation.status not in OPEN_FOR_RETENTION:
            continue
        for step in remediation.steps or ():
            backup = step.detail.get("backup")
            if isinstance(backup, Mapping) and isinstance(backup.get("id"), str):
                found.add(_id(backup))
    return found


def _id(backup: Mapping[str, Any]) -> str:
    return str(backup["id"])
