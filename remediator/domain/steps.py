"""Plan steps: one frozen model per ``StepKind``, each with its own typed parameters.

A step is stored and shown as ``{"kind": ..., "params": {...}, "reason": ...}``. ``kind``
picks the model, so a missing, misspelled or mistyped parameter is refused when the plan
is built (or read back from the journal), never when the step runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    StringConstraints,
    TypeAdapter,
    model_validator,
)


class StepKind(StrEnum):
    ROLLOUT_UNDO = "rollout_undo"  # rolling: kubectl rollout undo --to-revision
    WAIT_ROLLOUT = "wait_rollout"  # rolling/helm: watch rollout status
    SWITCH_SELECTOR = "switch_selector"  # blue-green: point the Service back
    SET_ROUTE_WEIGHTS = "set_route_weights"  # canary: HTTPRoute weight to 0
    SCALE_DEPLOYMENT = "scale_deployment"
    HELM_ROLLBACK = "helm_rollback"
    BACKUP_DATABASE = "backup_database"
    REVERT_MIGRATION = "revert_migration"
    EXPORT_CONFIG = "export_config"
    RESTORE_CONFIG = "restore_config"
    RESTART_WORKLOAD = "restart_workload"
    VERIFY_HEALTH = "verify_health"
    # The triggering condition has cleared: a PromQL expression returns nothing.
    VERIFY_CONDITION = "verify_condition"
    VERIFY_SMOKE = "verify_smoke"  # the catalog's smoke test, run as a Kubernetes Job
    # Read-only: the workload's Kubernetes events, helm history, failed requests.
    RECORD_EVIDENCE = "record_evidence"
    NOTIFY = "notify"


# The steps that check a change worked, rather than make it (the "verified" hop).
VERIFICATION_KINDS = frozenset(
    {StepKind.WAIT_ROLLOUT, StepKind.VERIFY_HEALTH, StepKind.VERIFY_CONDITION,
     StepKind.VERIFY_SMOKE}
)  # fmt: skip

Name = Annotated[str, StringConstraints(min_length=1)]
DatabaseEngine = Literal["postgres", "mysql"]


# --- parameters -------------------------------------------------------------------------


class StepParams(BaseModel):
    """What every step names: the namespace it acts in. Fields print in declaration order."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    namespace: Name


class RolloutUndoParams(StepParams):
    deployment: Name
    from_revision: PositiveInt  # Deployment revisions count from 1
    to_revision: PositiveInt


class WaitRolloutParams(StepParams):
    deployment: Name


class SwitchSelectorParams(StepParams):
    service_name: Name
    selector_label: Name
    from_value: str  # label values may be empty
    to_value: str


class SetRouteWeightsParams(StepParams):
    route: Name
    canary_weight: NonNegativeInt
    stable_weight: NonNegativeInt


def _absent(value: object) -> bool:
    return value is None


class ScaleDeploymentParams(StepParams):
    deployment: Name
    # Only a scale-up names it (and only a scale-up respects an HPA and never shrinks);
    # left out of the stored form otherwise, as before typed steps.
    from_replicas: NonNegativeInt | None = Field(default=None, exclude_if=_absent)
    # None: back to the size recorded before a canary began (the stable side).
    replicas: NonNegativeInt | None

    @model_validator(mode="after")
    def _scale_up_has_a_target(self) -> ScaleDeploymentParams:
        if self.from_replicas is not None and self.replicas is None:
            raise ValueError("a scale-up (from_replicas) must name the replicas it scales to")
        return self


class HelmRollbackParams(StepParams):
    release: Name
    from_revision: PositiveInt  # Helm revisions count from 1
    to_revision: PositiveInt


class BackupDatabaseParams(StepParams):
    engine: DatabaseEngine
    dsn_secret: Name | None  # the Secret's name (None: the DSN comes from env or file)
    before_migration: Name


class RevertMigrationParams(StepParams):
    engine: DatabaseEngine
    dsn_secret: Name | None
    migrations_table: Name
    migration: Name
    # Plans journaled before rules could allow it do not carry it: they did not allow it.
    allow_without_backup: bool = False


class ExportConfigParams(StepParams):
    configmap: Name


class RestoreConfigParams(StepParams):
    configmap: Name
    to: Literal["previous"]


class RestartWorkloadParams(StepParams):
    deployment: Name


class VerifyHealthParams(StepParams):
    url: Name


# Where a condition's expression came from: the rule pack (trusted config), the alert's
# generatorURL (sent by Prometheus through the authenticated webhook), or nowhere.
ConditionOrigin = Literal["rule", "alert", "none"]
MAX_CONDITION_QUERY_CHARS = 4096


class VerifyConditionParams(StepParams):
    service: Name
    query: Annotated[str, StringConstraints(max_length=MAX_CONDITION_QUERY_CHARS)] | None
    origin: ConditionOrigin
    window_seconds: PositiveInt
    # Series of this alert only: an expression grouped by service matches other services too.
    match_labels: dict[str, str] = Field(default_factory=dict)
    note: str = ""  # why there is no expression, when there is none


class VerifySmokeParams(StepParams):
    service: Name  # the catalog entry whose smoke_test template runs


class RecordEvidenceParams(StepParams):
    service: Name
    deployment: Name
    since: AwareDatetime  # when the incident began (the alert's start)
    helm_release: Name | None = None
    # Failed requests during the incident (PromQL; "$range" becomes the incident's length).
    failed_requests_query: str | None = None


class NotifyParams(StepParams):
    service: Name
    signal: str  # the kind of signal (alertname or event type)


# --- steps ------------------------------------------------------------------------------


class _Step(BaseModel):
    """Fields every step has; each kind narrows ``kind`` and ``params``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: StepKind
    params: StepParams
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class RolloutUndoStep(_Step):
    kind: Literal[StepKind.ROLLOUT_UNDO] = StepKind.ROLLOUT_UNDO
    params: RolloutUndoParams


class WaitRolloutStep(_Step):
    kind: Literal[StepKind.WAIT_ROLLOUT] = StepKind.WAIT_ROLLOUT
    params: WaitRolloutParams


class SwitchSelectorStep(_Step):
    kind: Literal[StepKind.SWITCH_SELECTOR] = StepKind.SWITCH_SELECTOR
    params: SwitchSelectorParams


class SetRouteWeightsStep(_Step):
    kind: Literal[StepKind.SET_ROUTE_WEIGHTS] = StepKind.SET_ROUTE_WEIGHTS
    params: SetRouteWeightsParams


class ScaleDeploymentStep(_Step):
    kind: Literal[StepKind.SCALE_DEPLOYMENT] = StepKind.SCALE_DEPLOYMENT
    params: ScaleDeploymentParams


class HelmRollbackStep(_Step):
    kind: Literal[StepKind.HELM_ROLLBACK] = StepKind.HELM_ROLLBACK
    params: HelmRollbackParams


class BackupDatabaseStep(_Step):
    kind: Literal[StepKind.BACKUP_DATABASE] = StepKind.BACKUP_DATABASE
    params: BackupDatabaseParams


class RevertMigrationStep(_Step):
    kind: Literal[StepKind.REVERT_MIGRATION] = StepKind.REVERT_MIGRATION
    params: RevertMigrationParams


class ExportConfigStep(_Step):
    kind: Literal[StepKind.EXPORT_CONFIG] = StepKind.EXPORT_CONFIG
    params: ExportConfigParams


class RestoreConfigStep(_Step):
    kind: Literal[StepKind.RESTORE_CONFIG] = StepKind.RESTORE_CONFIG
    params: RestoreConfigParams


class RestartWorkloadStep(_Step):
    kind: Literal[StepKind.RESTART_WORKLOAD] = StepKind.RESTART_WORKLOAD
    params: RestartWorkloadParams


class VerifyHealthStep(_Step):
    kind: Literal[StepKind.VERIFY_HEALTH] = StepKind.VERIFY_HEALTH
    params: VerifyHealthParams


class VerifyConditionStep(_Step):
    kind: Literal[StepKind.VERIFY_CONDITION] = StepKind.VERIFY_CONDITION
    params: VerifyConditionParams


class VerifySmokeStep(_Step):
    kind: Literal[StepKind.VERIFY_SMOKE] = StepKind.VERIFY_SMOKE
    params: VerifySmokeParams


class RecordEvidenceStep(_Step):
    kind: Literal[StepKind.RECORD_EVIDENCE] = StepKind.RECORD_EVIDENCE
    params: RecordEvidenceParams


class NotifyStep(_Step):
    kind: Literal[StepKind.NOTIFY] = StepKind.NOTIFY
    params: NotifyParams


# Any step; ``kind`` says which. Narrow with ``isinstance`` or ``match``.
Step = Annotated[
    RolloutUndoStep
    | WaitRolloutStep
    | SwitchSelectorStep
    | SetRouteWeightsStep
    | ScaleDeploymentStep
    | HelmRollbackStep
    | BackupDatabaseStep
    | RevertMigrationStep
    | ExportConfigStep
    | RestoreConfigStep
    | RestartWorkloadStep
    | VerifyHealthStep
    | VerifyConditionStep
    | VerifySmokeStep
    | RecordEvidenceStep
    | NotifyStep,
    Field(discriminator="kind"),
]

STEP_TYPES: Mapping[StepKind, type[_Step]] = {
    step_type.model_fields["kind"].default: step_type for step_type in get_args(get_args(Step)[0])
}

_STEP: TypeAdapter[Step] = TypeAdapter(Step)


def step_from_dict(data: Mapping[str, Any]) -> Step:
    """Inverse of ``to_dict``; pydantic's ``ValidationError`` names what is wrong."""
    return _STEP.validate_python(data)
