"""Schema of rule files: the service catalog, remediation rules and defaults.

Every model forbids unknown fields so a typo is reported with its name instead of
being silently ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from remediator.domain.automation import AutomationLevel
from remediator.domain.plans import ActionKind
from remediator.domain.rules.durations import format_duration, parse_duration
from remediator.domain.rules.matchers import Matcher, parse_matcher, split_matchers
from remediator.domain.signals import Source


def _to_duration(value: Any) -> Any:
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, bool):  # bool is an int; "true" is never a duration
        raise ValueError("a duration must be text like 30m or a number of seconds")
    return value


def _to_automation_level(value: Any) -> AutomationLevel:
    levels = ", ".join(level.value for level in AutomationLevel)
    if isinstance(value, AutomationLevel):
        return value
    if isinstance(value, str):
        try:
            return AutomationLevel(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an automation level (one of {levels})") from None
    raise ValueError(f"expected one of {levels}, got {type(value).__name__} {value!r}")


def _to_matcher(value: Any) -> Matcher:
    if isinstance(value, Matcher):
        return value
    if not isinstance(value, str):
        raise ValueError('a matcher must be a string like severity=~"critical|page"')
    return parse_matcher(value)


Duration = Annotated[
    timedelta,
    BeforeValidator(_to_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "examples": ["30m", "1h30m"]}),
]
AutomationLevelField = Annotated[
    AutomationLevel,
    PlainValidator(_to_automation_level),
    PlainSerializer(lambda level: level.value, return_type=str),
    WithJsonSchema({"enum": [level.value for level in AutomationLevel]}),
]


def _split_matcher_lines(value: Any) -> Any:
    """One ``matchers:`` entry may hold several matchers (``a="1", b="2"`` or
    ``{a="1"}``), as in Alertmanager; each becomes its own matcher."""
    if not isinstance(value, list | tuple):
        return value
    return [
        token
        for item in value
        for token in (split_matchers(item) if isinstance(item, str) else [item])
    ]


MatcherField = Annotated[
    Matcher,
    PlainValidator(_to_matcher),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "examples": ['severity=~"critical|page"']}),
]
# DNS-1123 label/subdomain: what Kubernetes accepts for names of the objects we touch.
K8sName = Annotated[
    str, StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=253)
]
LabelKey = Annotated[
    str, StringConstraints(pattern=r"^([a-z0-9.-]+/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
]
RuleName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]*$", max_length=100)]
Text = Annotated[str, StringConstraints(min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- catalog -------------------------------------------------------------------------


class RollingRollback(_Strict):
    """``kubectl rollout undo`` on the workload (or ``deployment`` when it differs)."""

    strategy: Literal["rolling"]
    deployment: K8sName | None = None


class BlueGreenRollback(_Strict):
    """Point the Service's selector back at the previous colour/version."""

    strategy: Literal["blue-green"]
    service_name: K8sName
    selector_label: LabelKey


class CanaryRollback(_Strict):
    """Canary weight to 0 on the HTTPRoute, stable scaled up, canary scaled to 0."""

    strategy: Literal["canary"]
    route_name: K8sName
    canary_deployment: K8sName
    stable_deployment: K8sName


class HelmRollback(_Strict):
    """``helm rollback RELEASE REVISION``."""

    strategy: Literal["helm"]
    release: K8sName


RollbackSpec = Annotated[
    RollingRollback | BlueGreenRollback | CanaryRollback | HelmRollback,
    Field(discriminator="strategy"),
]


class ScaleSpec(_Strict):
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(ge=1)
    step: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _bounds_ordered(self) -> ScaleSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must not exceed max_replicas")
        return self


EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class MigrationJobSpec(_Strict):
    """The ``job`` runner: a Kubernetes Job running the service's own image."""

    image: Text
    # The rollback command; "{target}" in an argument becomes the version to end at
    # ("-1" when reverting only the last migration).
    command: tuple[Text, ...] = Field(min_length=1)
    service_account: K8sName | None = None
    timeout: Duration = timedelta(minutes=30)
    # Environment variable the Job's container gets the DSN in (from ``dsn_secret``).
    dsn_env_name: EnvName = "DATABASE_URL"
    dsn_secret_key: Text = "dsn"  # noqa: S105 - the key's name, not a secret


class IntegrityQuerySpec(_Strict):
    """Run after every revert; must return ``expect_rows`` rows (0: nothing violates it)."""

    name: RuleName
    sql: Text
    expect_rows: int = Field(default=0, ge=0)


class DatabaseSpec(_Strict):
    engine: Literal["postgres", "mysql"]
    # Where the DSN comes from: exactly one of a Kubernetes Secret (read through the
    # API), an environment variable of remediator's pod, or a file (a mounted Secret).
    # Never the DSN itself.
    dsn_secret: K8sName | None = None
    dsn_env: EnvName | None = None
    dsn_file: Text | None = None
    migrations_table: Text = "schema_migrations"
    runner: Literal["sqldir", "alembic", "job"] = "sqldir"
    migrations_dir: Text | None = None  # sqldir: NNN_name.up.sql / NNN_name.down.sql
    allow_non_transactional: bool = False  # sqldir: down scripts outside a transaction
    alembic_dir: Text | None = None  # alembic: holds alembic.ini; the working directory
    alembic_command: tuple[Text, ...] = ("alembic",)
    alembic_driver: Text | None = None  # postgresql:// -> postgresql+<driver>://
    job: MigrationJobSpec | None = None
    backup_dir: Text | None = None  # default: the daemon's backup root
    backup_timeout: Duration = timedelta(hours=1)
    # 0: a second revert of the service while one runs is refused at once.
    lock_wait: Duration = timedelta(0)
    integrity_queries: tuple[IntegrityQuerySpec, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> DatabaseSpec:
        sources = [
            name
            for name in ("dsn_secret", "dsn_env", "dsn_file")
            if getattr(self, name) is not None
        ]
        if len(sources) != 1:
            raise ValueError(
                "give exactly one of dsn_secret, dsn_env, dsn_file"
                + (f" (got {', '.join(sources)})" if sources else "")
            )
        if self.runner == "alembic" and self.alembic_dir is None:
            raise ValueError("alembic_dir is required when runner is alembic")
        if self.runner == "job" and self.job is None:
            raise ValueError("job is required when runner is job")
        if self.runner == "job" and self.dsn_secret is None:
            raise ValueError("runner job needs dsn_secret: the Job's pod reads the DSN from it")
        names = [q.name for q in self.integrity_queries]
        if len(set(names)) != len(names):
            raise ValueError("integrity_queries: names must be unique")
        return self


class SmokeTestSpec(_Strict):
    """A smoke test run as a Kubernetes Job in the service's namespace after every change;
    the change counts only when the Job completes."""

    image: Text
    command: tuple[Text, ...] = Field(min_length=1)
    service_account: K8sName | None = None
    timeout: Duration = timedelta(minutes=5)
    # Labels for the Job's pod (what a mesh or a policy needs); remediator's own win.
    labels: dict[LabelKey, Annotated[str, StringConstraints(max_length=63)]] = {}


class ConfigSpec(_Strict):
    configmaps: tuple[K8sName, ...] = Field(min_length=1)


class ServiceSpec(_Strict):
    namespace: K8sName
    workload: K8sName  # the Deployment that serves the service
    rollback: RollbackSpec
    scale: ScaleSpec | None = None
    database: DatabaseSpec | None = None
    config: ConfigSpec | None = None
    health_url: Annotated[str, StringConstraints(pattern=r"^https?://\S+$")] | None = None
    smoke_test: SmokeTestSpec | None = None
    # Who owns the service (a team or a person), named in the rollback record.
    owner: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    approvers: tuple[Text, ...] = ()
    max_revisions_back: int | None = Field(default=None, ge=1)
    # The trust ladder: notify (decide and tell), approve (every automatic plan waits
    # for approval), auto (act). None: defaults.automation.
    automation: AutomationLevelField | None = None


# --- rules ---------------------------------------------------------------------------


class MatchSpec(_Strict):
    """All given conditions must hold (empty ``kinds``/``matchers``/``services`` = any)."""

    source: Source
    kinds: tuple[Text, ...] = ()  # alertnames, event types or manual request kinds
    matchers: Annotated[tuple[MatcherField, ...], BeforeValidator(_split_matcher_lines)] = ()
    services: tuple[K8sName, ...] = ()


# Long enough for any real alerting rule; an expression is journaled with the plan.
MAX_VERIFY_QUERY_CHARS = 4096
# The metric the shipped alerting rules assume (rules/prometheus/remediator-alerts.yml).
DEFAULT_FAILED_REQUESTS_QUERY = (
    'sum(increase(http_requests_total{service="$service",namespace="$namespace",'
    'code=~"5.."}[$range]))'
)


class VerifySpec(_Strict):
    """How a rule's plans check that the triggering condition has cleared.

    ``query``: a PromQL expression that returns nothing once the condition is gone
    (``$service`` and ``$namespace`` become the catalog's values). Without it, the
    expression of the alert's own rule (``g0.expr`` in its generatorURL) is used.
    """

    window: Duration = timedelta(minutes=10)
    query: (
        Annotated[str, StringConstraints(min_length=1, max_length=MAX_VERIFY_QUERY_CHARS)] | None
    ) = None
    # The record's "failed requests during the incident"; "$range" becomes its length.
    failed_requests_query: Annotated[
        str, StringConstraints(min_length=1, max_length=MAX_VERIFY_QUERY_CHARS)
    ] = DEFAULT_FAILED_REQUESTS_QUERY

    @field_validator("window")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value < timedelta(seconds=1):
            raise ValueError("window must be at least 1s")
        return value


class Rule(_Strict):
    name: RuleName
    description: str = ""
    match: MatchSpec
    action: ActionKind
    enabled: bool = True
    cooldown: Duration | None = None
    dry_run: bool | None = None
    require_approval: bool | None = None
    approvers: tuple[Text, ...] | None = None
    approval_timeout: Duration | None = None  # how fast approvers are expected to answer
    # revert_migration only: go on when no verified backup could be taken (databases
    # too big to dump within the incident). Off unless a rule says so.
    allow_without_backup: bool = False
    verify: VerifySpec = VerifySpec()


# --- defaults ------------------------------------------------------------------------


class CircuitBreakerSpec(_Strict):
    max_actions: int = Field(default=10, ge=1)  # automated actions, all services, per window
    window: Duration = timedelta(hours=1)
    max_consecutive_failures: int = Field(default=3, ge=1)


# The cluster's own machinery: a catalog entry there is refused unless listed explicitly in
# ``allow_protected_namespaces``, even when a pack's ``protected_namespaces`` leaves it out.
ALWAYS_PROTECTED_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")
# Sources that can know what a service runs: the CD pipeline's deploy events. An alert can
# say *that* something is wrong, never which revision, selector value or migration is the
# good one; a manual request names a wish, not a fact. Neither may write history.
HISTORY_CAPABLE_SOURCES = frozenset({Source.KAFKA})


class Defaults(_Strict):
    recent_deploy_window: Duration = timedelta(minutes=30)
    cooldown: Duration = timedelta(minutes=30)
    max_actions_per_service_per_day: int = Field(default=3, ge=1)
    max_revisions_back: int = Field(default=5, ge=1)
    dry_run: bool = False
    require_approval: bool = False
    # The automation level of services that do not set their own; auto acts as
    # remediator did before levels existed.
    automation: AutomationLevelField = AutomationLevel.AUTO
    # Who approves a plan that must wait when neither its rule nor its service names
    # approvers (e.g. every plan of a service at automation level approve).
    approvers: tuple[Text, ...] = ()
    circuit_breaker: CircuitBreakerSpec = CircuitBreakerSpec()
    # Whose events become deploy and migration history (revisions, selector values,
    # migration ids): the only place rollback and revert targets come from.
    trusted_history_sources: tuple[Source, ...] = (Source.KAFKA,)
    # CloudEvents ``source`` attributes trusted on the deploy topics; empty: every producer
    # allowed to write to those topics.
    trusted_event_sources: tuple[Text, ...] = ()
    protected_namespaces: tuple[K8sName, ...] = ALWAYS_PROTECTED_NAMESPACES
    allow_protected_namespaces: tuple[K8sName, ...] = ()

    @field_validator("trusted_history_sources")
    @classmethod
    def _only_sources_that_know_history(cls, value: tuple[Source, ...]) -> tuple[Source, ...]:
        for source in value:
            if source not in HISTORY_CAPABLE_SOURCES:
                raise ValueError(
                    f"{source.value} cannot be trusted for deploy or migration history: "
                    f"it can say that something is wrong, never what to roll back to "
                    f"(allowed: {', '.join(sorted(HISTORY_CAPABLE_SOURCES))})"
                )
        return value

    @property
    def protected(self) -> frozenset[str]:
        """Namespaces no catalog entry may name: the protected ones not explicitly allowed."""
        listed = {*ALWAYS_PROTECTED_NAMESPACES, *self.protected_namespaces}
        return frozenset(listed - set(self.allow_protected_namespaces))


# --- files and packs -----------------------------------------------------------------


class RuleFile(_Strict):
    """One YAML file; a pack is any number of these merged."""

    services: dict[K8sName, ServiceSpec] = {}
    rules: tuple[Rule, ...] = ()
    defaults: Defaults | None = None


class RuleIndex:
    """(source, kind) -> the enabled rules that can match it, in pack order. Filled as
    signals arrive; a kind is sender-chosen text, so only so many are kept.

    Kept outside the model's fields and private attributes: those take part in equality
    and in model_copy, and a private attribute costs ~2 µs a read."""

    __slots__ = ("kept", "rules")
    MAX_KEYS = 4096

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        self.rules = rules
        self.kept: dict[tuple[Source, str], tuple[Rule, ...]] = {}

    def candidates(self, source: Source, kind: str) -> tuple[Rule, ...]:
        key = (source, kind)
        found = self.kept.get(key)
        if found is None:
            found = tuple(
                rule for rule in self.rules
                if rule.enabled and rule.match.source is source
                and (not rule.match.kinds or kind in rule.match.kinds)
            )  # fmt: skip
            if len(self.kept) < self.MAX_KEYS:
                self.kept[key] = found
        return found


class RulePack(_Strict):
    services: Mapping[str, ServiceSpec]
    rules: tuple[Rule, ...]
    defaults: Defaults = Defaults()
    # rule name -> "file:line", so explanations can point at the rule's source.
    origins: Mapping[str, str] = {}

    def automation(self, service: str) -> AutomationLevel:
        """The service's automation level: its own, else the pack's default."""
        spec = self.services.get(service)
        own = spec.automation if spec is not None else None
        return own if own is not None else self.defaults.automation

    def rule(self, name: str) -> Rule | None:
        return next((rule for rule in self.rules if rule.name == name), None)

    @cached_property
    def rule_index(self) -> RuleIndex:
        return RuleIndex(self.rules)

    def candidates(self, source: Source, kind: str) -> tuple[Rule, ...]:
        """The enabled rules for signals of ``source`` and ``kind``, in pack order: the
        only ones worth matching further (services and label matchers)."""
        index = self.rule_index
        if index.rules is not self.rules:  # model_copy copied the index with other rules
            index = self.__dict__["rule_index"] = RuleIndex(self.rules)
        return index.candidates(source, kind)

    def out_of_scope(self, service: str, namespace: str | None) -> str | None:
        """Why remediator may not act on ``service`` in ``namespace`` (``None``: it may).

        ``namespace`` ``None`` means the caller does not say; the catalog's then applies.
        """
        spec = self.services.get(service)
        if spec is None:
            return f"service {service!r} is not in the catalog"
        if namespace is not None and namespace != spec.namespace:
            return (
                f"namespace {namespace!r} is not where the catalog places {service!r} "
                f"({spec.namespace!r})"
            )
        if spec.namespace in self.defaults.protected:
            return f"namespace {spec.namespace!r} is protected"
        return None
