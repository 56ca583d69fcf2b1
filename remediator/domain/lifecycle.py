"""A remediation's life: one status enum, the transitions allowed between its statuses,
and the ``Remediation`` every layer passes around (journal, engine, API, CLI).

The transitions are defined here once; both journals refuse any other with
``IllegalTransition`` inside the same transaction as the write, so a bug or a race
between replicas is an error, never a silent overwrite.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict

from remediator.domain.approvals import ApprovalState
from remediator.domain.errors import PermanentError
from remediator.domain.plans import ActionKind, Plan
from remediator.domain.times import utc_text as utc_text


class RemediationStatus(StrEnum):
    PLANNED = "planned"  # runnable: the executor claims it next
    AWAITING_APPROVAL = "awaiting_approval"  # runnable once approved
    DRY_RUN = "dry-run"  # rehearsed: steps recorded, nothing changed
    SKIPPED = "skipped"  # a safety check held it back; never runs
    RUNNING = "running"  # claimed by one replica's executor
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    NEEDS_HUMAN = "needs_human"  # people must finish or decide
    REJECTED = "rejected"  # an approver said no
    CANCELLED = "cancelled"  # withdrawn before it ran
    EXPIRED = "expired"  # nobody approved within the approval window

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")

    @property
    def final(self) -> bool:
        """Nothing more will happen to it (a dry run is final once rehearsed)."""
        return self not in _OPEN

    @property
    def initial(self) -> bool:
        """A status a remediation may be created in."""
        return self in _INITIAL


_OPEN = frozenset(
    {RemediationStatus.PLANNED, RemediationStatus.AWAITING_APPROVAL, RemediationStatus.RUNNING}
)
_INITIAL = frozenset(
    {
        RemediationStatus.PLANNED,
        RemediationStatus.AWAITING_APPROVAL,
        RemediationStatus.DRY_RUN,
        RemediationStatus.SKIPPED,
    }
)

S = RemediationStatus
TRANSITIONS: Mapping[RemediationStatus, frozenset[RemediationStatus]] = {
    # Claimed to run, or to rehearse when the executor runs dry; failed when it cannot
    # even start (its plan does not load); cancelled by people before it ran.
    S.PLANNED: frozenset({S.RUNNING, S.DRY_RUN, S.FAILED, S.CANCELLED}),
    S.AWAITING_APPROVAL: frozenset({S.PLANNED, S.REJECTED, S.CANCELLED, S.EXPIRED}),
    S.RUNNING: frozenset({S.SUCCEEDED, S.FAILED, S.NEEDS_HUMAN}),
    # A dry run is claimed and finished without changing its status.
    S.DRY_RUN: frozenset({S.DRY_RUN}),
    S.SKIPPED: frozenset(),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset(),
    S.NEEDS_HUMAN: frozenset(),
    S.REJECTED: frozenset(),
    S.CANCELLED: frozenset(),
    S.EXPIRED: frozenset(),
}
del S


class IllegalTransition(PermanentError):
    """A write asked for a status change the lifecycle does not allow."""

    def __init__(self, remediation_id: str, old: RemediationStatus, new: RemediationStatus):
        super().__init__(f"remediation {remediation_id}: {old.value} cannot become {new.value}")
        self.remediation_id = remediation_id
        self.old = old
        self.new = new


def check_transition(remediation_id: str, old: RemediationStatus, new: RemediationStatus) -> None:
    """Raise ``IllegalTransition`` unless ``old`` may become ``new``."""
    if new not in TRANSITIONS[old]:
        raise IllegalTransition(remediation_id, old, new)


class ClaimLost(PermanentError):
    """A write about a claimed remediation by an instance that no longer holds the claim
    (another replica took it over while this one was stopped or cut off)."""

    def __init__(self, remediation_id: str, holder: str):
        super().__init__(f"remediation {remediation_id}: no longer claimed by {holder}")
        self.remediation_id = remediation_id
        self.holder = holder


class StepStatus(StrEnum):
    STARTED = "started"  # journaled before the step runs: unfinished after a crash
    SUCCEEDED = "succeeded"
    FAILED = "failed"


def _text_or_none(value: datetime | None) -> str | None:
    return None if value is None else utc_text(value)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StepRecord(_Frozen):
    """One plan step as the executor journaled it (the remediation's timeline)."""

    idx: int
    kind: str
    status: StepStatus
    started_at: AwareDatetime
    finished_at: AwareDatetime | None = None
    detail: dict[str, Any] = {}

    def to_api(self) -> dict[str, Any]:
        return {
            "idx": self.idx,
            "kind": self.kind,
            "status": self.status.value,
            "started_at": utc_text(self.started_at),
            "finished_at": _text_or_none(self.finished_at),
            "detail": self.detail,
        }


class Remediation(_Frozen):
    """One remediation as journaled: what was decided, where it is in its life, who
    claimed and approved it. ``decision`` and ``steps`` are None when not loaded
    (list views); ``plan()`` reads the plan back from the decision."""

    id: str
    signal_id: str
    service: str
    namespace: str | None
    rule: str | None
    action: ActionKind | None
    status: RemediationStatus
    reason: str | None
    manual: bool
    automated: bool
    created_at: AwareDatetime
    updated_at: AwareDatetime
    explanation: str
    claimed_by: str | None = None
    claimed_at: AwareDatetime | None = None
    finished_at: AwareDatetime | None = None
    approved_by: str | None = None
    approved_at: AwareDatetime | None = None
    approved_as: tuple[str, ...] | None = None
    approval_comment: str | None = None
    decision: dict[str, Any] | None = None
    steps: tuple[StepRecord, ...] | None = None
    # The request and its votes, for a plan that needed approval (None when not loaded:
    # list views, or a plan that never needed approval).
    approval: ApprovalState | None = None

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    def plan(self) -> Plan:
        """The plan this remediation runs (a skipped or dry-run decision keeps it too)."""
        if self.decision is None:
            raise PermanentError(f"remediation {self.id}: decision not loaded")
        decision = self.decision
        return Plan.model_validate(decision if "steps" in decision else decision["plan"])

    def to_api(self) -> dict[str, Any]:
        """The JSON form the HTTP API and the CLI show (times as ``utc_text``)."""
        item: dict[str, Any] = {
            "id": self.id,
            "signal_id": self.signal_id,
            "service": self.service,
            "namespace": self.namespace,
            "rule": self.rule,
            "action": None if self.action is None else self.action.value,
            "status": self.status.value,
            "reason": self.reason,
            "manual": self.manual,
            "automated": self.automated,
            "created_at": utc_text(self.created_at),
            "updated_at": utc_text(self.updated_at),
            "explanation": self.explanation,
            "claimed_by": self.claimed_by,
            "claimed_at": _text_or_none(self.claimed_at),
            "finished_at": _text_or_none(self.finished_at),
            "approved_by": self.approved_by,
            "approved_at": _text_or_none(self.approved_at),
            "approved_as": None if self.approved_as is None else list(self.approved_as),
            "approval_comment": self.approval_comment,
        }
        if self.decision is not None:
            item["decision"] = self.decision
        if self.steps is not None:
            item["steps"] = [step.to_api() for step in self.steps]
        if self.approval is not None:
            item["approval"] = self.approval.to_api()
        return item


def remediation_id(signal_id: str) -> str:
    """The id of the remediation a signal's decision opens: derived from the signal, so
    deciding the same signal again writes the same remediation (and the API knows the id
    of a request's remediation before it is decided)."""
    return "rem_" + hashlib.blake2b(signal_id.encode(), digest_size=10).hexdigest()
