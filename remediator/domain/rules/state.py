"""What the engine knows about a service when it decides: the input beside the signal.

The engine builds this from the journal (deploys, migrations, past remediations, the
circuit breaker) and from Kubernetes (replicas); the decision itself reads nothing else.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from remediator.domain.plans import ActionKind
from remediator.domain.rules.durations import format_duration
from remediator.domain.rules.model import CircuitBreakerSpec

_ZERO = timedelta(0)


class _State(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DeployRecord(_State):
    revision: str  # Deployment revision, Helm revision, or blue-green selector value
    finished_at: AwareDatetime
    version: str | None = None
    image: str | None = None  # the image or artifact the deploy event names
    # True once verified healthy; rollbacks only ever target a revision marked True.
    healthy: bool | None = None
    previous_revision: str | None = None


class MigrationStatus(StrEnum):
    APPLIED = "applied"
    FAILED = "failed"
    REVERTED = "reverted"


class MigrationRecord(_State):
    id: str
    status: MigrationStatus
    at: AwareDatetime
    version: str | None = None  # the release the migration belongs to


class PastOutcome(StrEnum):
    """How the rules see a past remediation: still open, or how it ended."""

    OPEN = "open"  # planned, running, or left to people (needs_human)
    # Awaiting approval: people are deciding, and automation for the service goes on
    # meanwhile (the Lease is taken only when a plan runs).
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"  # never ran: withdrawn, rejected or expired

    @property
    def acted(self) -> bool:
        """It ran, or may still run without another decision (counts for cooldown and
        the daily limit)."""
        return self not in (PastOutcome.WAITING, PastOutcome.CANCELLED)


class RemediationRecord(_State):
    action: ActionKind  # the concrete action run (rollback, scale_up, ...)
    started_at: AwareDatetime
    status: PastOutcome
    rule: str | None = None
    manual: bool = False


class CircuitState(_State):
    """Global breaker state since its last reset (the engine persists it)."""

    open: bool = False
    # Start times of automated actions on any service since the last reset.
    automated_action_times: tuple[AwareDatetime, ...] = ()
    consecutive_failures: int = Field(default=0, ge=0)


class ServiceState(_State):
    current_replicas: int | None = Field(default=None, ge=0)
    # e.g. the HPA's maximum; the lower of this and the catalog's scale.max_replicas applies.
    max_replicas: int | None = Field(default=None, ge=0)
    # Why reading live facts failed, when it did (replicas are then unknown).
    facts_error: str | None = None
    deploys: tuple[DeployRecord, ...] = ()
    migrations: tuple[MigrationRecord, ...] = ()
    remediations: tuple[RemediationRecord, ...] = ()
    circuit: CircuitState = CircuitState()

    def deploys_newest_first(self) -> list[DeployRecord]:
        return sorted(self.deploys, key=lambda deploy: deploy.finished_at, reverse=True)


def circuit_trip_reason(
    circuit: CircuitState, *, limits: CircuitBreakerSpec, now: datetime
) -> str | None:
    """Why the breaker is (or should now be) open, or ``None`` when automation may run.

    The engine latches the breaker open when this returns a reason; only a reset
    (CLI/API) closes it again.
    """
    if circuit.open:
        return "the circuit breaker is open until reset"
    if circuit.consecutive_failures >= limits.max_consecutive_failures:
        return (
            f"{circuit.consecutive_failures} consecutive remediations failed "
            f"(limit {limits.max_consecutive_failures})"
        )
    recent = count_since(circuit.automated_action_times, now=now, window=limits.window)
    if recent >= limits.max_actions:
        window = format_duration(limits.window)
        return f"{recent} automated actions in the last {window} (limit {limits.max_actions})"
    return None


def count_since(times: tuple[datetime, ...], *, now: datetime, window: timedelta) -> int:
    """How many of ``times`` fall in ``[now - window, now]``, compared as differences so
    that no datetime leaves the representable range (a window of centuries, year 1)."""
    return sum(1 for moment in times if _ZERO <= now - moment <= window)
