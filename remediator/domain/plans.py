"""What the rule engine decided: a ``Plan`` to run, or ``NoAction`` and why.

Both are frozen, JSON-able (``to_dict``) and carry their own explanation, so the
journal can store the decision exactly as it was explained.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from remediator.domain.steps import Step as Step
from remediator.domain.steps import StepKind as StepKind


class ActionKind(StrEnum):
    """Actions a rule may ask for; ``scale_or_rollback`` resolves to one of two."""

    ROLLBACK = "rollback"
    SCALE_UP = "scale_up"
    SCALE_OR_ROLLBACK = "scale_or_rollback"
    REVERT_MIGRATION = "revert_migration"
    RESTORE_CONFIG = "restore_config"
    NOTIFY_ONLY = "notify_only"


class NoActionReason(StrEnum):
    RESOLVED = "resolved"  # resolved alerts never start actions
    UNROUTABLE = "unroutable"  # names no service
    # Outside what remediator may act on: a service not in the catalog, a namespace other
    # than the catalog's, or a protected namespace.
    NOT_IN_CATALOG = "not_in_catalog"
    NO_RULE = "no_rule"
    IN_PROGRESS = "in_progress"  # a remediation for this service is still open
    COOLDOWN = "cooldown"
    RATE_LIMITED = "rate_limited"  # too many actions for this service in 24 h
    CIRCUIT_OPEN = "circuit_open"
    DRY_RUN = "dry_run"
    OUTSIDE_ROLLBACK_WINDOW = "outside_rollback_window"  # no healthy revision in range
    ESCALATED = "escalated"  # at max replicas and no recent deploy: people decide
    NOT_APPLICABLE = "not_applicable"  # the action lacks what it needs (db, config, replicas)
    # The signal asks for something only trusted history may decide, and that history
    # disagrees or is silent (a migration an alert names): people decide.
    NEEDS_HUMAN = "needs_human"
    # Deciding this signal failed (a bug or data the rules cannot handle); the engine, not
    # the rules, records it so that one signal never stops deciding for the others.
    INTERNAL_ERROR = "internal_error"
    # The service's automation level is notify: remediator decided, tells people what
    # would have run (the plan is attached), and never acts on its own.
    AUTOMATION_NOTIFY = "automation_notify"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form for the journal and the HTTP API."""
        return self.model_dump(mode="json")


class Versions(_Frozen):
    """What a rollback goes from and to, as the trusted deploy events recorded them."""

    revision_from: str | None = None
    revision_to: str | None = None
    version_from: str | None = None
    version_to: str | None = None
    image_from: str | None = None
    image_to: str | None = None


def _absent(value: object) -> bool:
    return value is None


class Plan(_Frozen):
    service: str
    namespace: str
    rule: str
    requested_action: ActionKind  # what the rule asked for
    action: ActionKind  # what will run (scale_or_rollback resolved)
    steps: tuple[Step, ...]
    dry_run: bool = False
    require_approval: bool = False
    approvers: tuple[str, ...] = ()
    signal_id: str = ""
    explanation: str = ""
    # Rollbacks only; left out of the stored form otherwise (plans journaled before it).
    versions: Versions | None = Field(default=None, exclude_if=_absent)

    @property
    def automated(self) -> bool:
        """Counts toward rate limits and the circuit breaker (notifications do not)."""
        return self.action is not ActionKind.NOTIFY_ONLY


class NoAction(_Frozen):
    reason: NoActionReason
    detail: str
    rule: str | None = None
    service: str | None = None
    signal_id: str = ""
    # People should hear about it (circuit open, escalation) even though nothing runs.
    notify: bool = False
    # What would have run: set for dry-run and for safety skips, for the record.
    plan: Plan | None = None


Decision = Plan | NoAction


def explain(decision: Decision) -> str:
    """Human-readable account of a decision, as printed by ``rules explain``."""
    if isinstance(decision, NoAction):
        lines = [f"no action ({decision.reason.value}): {decision.detail}"]
        if decision.rule:
            lines.append(f"rule: {decision.rule}")
        if decision.notify:
            lines.append("people are notified")
        if decision.plan is not None:
            lines.append("would have run:")
            lines.extend(_step_lines(decision.plan))
        return "\n".join(lines)
    header = f"plan: {decision.action.value} {decision.namespace}/{decision.service}"
    if decision.requested_action is not decision.action:
        header += f" (rule asked for {decision.requested_action.value})"
    lines = [header, f"rule: {decision.rule}"]
    if decision.explanation:
        lines.append(f"why: {decision.explanation}")
    if decision.dry_run:
        lines.append("dry run: steps are recorded, not executed")
    if decision.require_approval:
        approvers = ", ".join(decision.approvers) or "anyone allowed to approve"
        lines.append(f"needs approval from: {approvers}")
    lines.extend(_step_lines(decision))
    return "\n".join(lines)


def _step_lines(plan: Plan) -> list[str]:
    lines = []
    for number, step in enumerate(plan.steps, start=1):
        params = " ".join(f"{key}={value}" for key, value in step.params.model_dump().items())
        lines.append(f"  {number}. {step.kind.value} {params}".rstrip())
        lines.append(f"     because {step.reason}")
    return lines


def decision_from_dict(data: dict[str, Any]) -> Decision:
    """Inverse of ``to_dict`` (the journal reads decisions back)."""
    if "reason" in data:
        return NoAction.model_validate(data)
    return Plan.model_validate(data)
