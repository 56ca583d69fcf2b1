"""The decision: signal + rule pack + service state -> ``Plan`` or ``NoAction``.

Pure: no clock (``now`` is passed in), no I/O. The engine persists what happens next
(open remediations, the breaker) and feeds it back through ``ServiceState``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from remediator.domain.automation import AutomationLevel
from remediator.domain.plans import (
    ActionKind,
    Decision,
    NoAction,
    NoActionReason,
    Plan,
    Step,
    Versions,
)
from remediator.domain.requests import TARGET_LABEL
from remediator.domain.rules.durations import format_duration
from remediator.domain.rules.events import history_trusted
from remediator.domain.rules.matchers import first_mismatch
from remediator.domain.rules.model import (
    BlueGreenRollback,
    CanaryRollback,
    Defaults,
    HelmRollback,
    RollingRollback,
    Rule,
    RulePack,
    ServiceSpec,
)
from remediator.domain.rules.state import (
    DeployRecord,
    MigrationRecord,
    MigrationStatus,
    PastOutcome,
    ServiceState,
    circuit_trip_reason,
    count_since,
)
from remediator.domain.rules.verification import condition_params
from remediator.domain.signals import Signal, Source, Status
from remediator.domain.steps import (
    BackupDatabaseParams,
    BackupDatabaseStep,
    ExportConfigParams,
    ExportConfigStep,
    HelmRollbackParams,
    HelmRollbackStep,
    NotifyParams,
    NotifyStep,
    RecordEvidenceParams,
    RecordEvidenceStep,
    RestartWorkloadParams,
    RestartWorkloadStep,
    RestoreConfigParams,
    RestoreConfigStep,
    RevertMigrationParams,
    RevertMigrationStep,
    RolloutUndoParams,
    RolloutUndoStep,
    ScaleDeploymentParams,
    ScaleDeploymentStep,
    SetRouteWeightsParams,
    SetRouteWeightsStep,
    SwitchSelectorParams,
    SwitchSelectorStep,
    VerifyConditionStep,
    VerifyHealthParams,
    VerifyHealthStep,
    VerifySmokeParams,
    VerifySmokeStep,
    WaitRolloutParams,
    WaitRolloutStep,
)

_DAY = timedelta(days=1)
_ZERO = timedelta(0)


def rule_mismatch(rule: Rule, signal: Signal) -> str | None:
    """Why ``rule`` does not match ``signal`` (``None`` when it matches). Status is not
    considered: a resolved alert still names its rule so the engine can close a watch."""
    if not rule.enabled:
        return "rule is disabled"
    if signal.source is not rule.match.source:
        return f"source is {signal.source.value}, rule wants {rule.match.source.value}"
    if rule.match.kinds and signal.kind not in rule.match.kinds:
        return f"{signal.kind!r} is not one of {list(rule.match.kinds)}"
    if rule.match.services and signal.service not in rule.match.services:
        return f"service {signal.service!r} is not one of {list(rule.match.services)}"
    failed = first_mismatch(rule.match.matchers, signal.labels)
    if failed is not None:
        return f"matcher {failed} fails (label is {signal.labels.get(failed.name, '')!r})"
    return None


def match_rule(signal: Signal, *, pack: RulePack) -> Rule | None:
    """The first matching rule in pack order (files in the order given, rules in file order).

    The same answer as the first rule whose ``rule_mismatch`` is ``None``, without
    building a reason for each rule that does not match (every signal is matched)."""
    for rule in pack.candidates(signal.source, signal.kind):
        if rule.match.services and signal.service not in rule.match.services:
            continue
        if first_mismatch(rule.match.matchers, signal.labels) is None:
            return rule
    return None


def decide(
    signal: Signal,
    *,
    pack: RulePack,
    state: ServiceState,
    now: datetime,
    dry_run: bool = False,
) -> Decision:
    """Decide what to do about one signal.

    ``dry_run`` is the daemon-wide switch; the pack's ``defaults.dry_run`` and the
    rule's ``dry_run`` may also turn it on (a rule may turn the pack default off, never
    the daemon-wide switch).
    """
    rule = match_rule(signal, pack=pack)
    rule_name = rule.name if rule else None

    def skip(reason: NoActionReason, detail: str, **extra: object) -> NoAction:
        return NoAction.model_validate(
            {
                "reason": reason,
                "detail": detail,
                "rule": rule_name,
                "service": signal.service,
                "signal_id": signal.id,
                **extra,
            }
        )

    if signal.status is Status.RESOLVED:
        return skip(
            NoActionReason.RESOLVED,
            f"{_describe(signal)} is resolved; resolved alerts never start actions",
        )
    if signal.service is None:
        return skip(NoActionReason.UNROUTABLE, f"{_describe(signal)} names no service")
    # Scope before rules: whatever a rule says, nothing outside the catalog is touched.
    outside = pack.out_of_scope(signal.service, signal.namespace or None)
    if outside is not None:
        return skip(
            NoActionReason.NOT_IN_CATALOG,
            f"{_describe(signal)}: {outside}; remediator acts only on the catalog's services",
        )
    if rule is None:
        return skip(NoActionReason.NO_RULE, f"no enabled rule matches {_describe(signal)}")
    spec = pack.services[signal.service]

    manual = signal.source is Source.MANUAL
    automated = rule.action is not ActionKind.NOTIFY_ONLY and not manual
    defaults = pack.defaults
    if automated:
        tripped = circuit_trip_reason(state.circuit, limits=defaults.circuit_breaker, now=now)
        if tripped is not None:
            return skip(
                NoActionReason.CIRCUIT_OPEN,
                f"{tripped}; only notifying about {_describe(signal)}",
                notify=True,
            )
    open_ones = [r for r in state.remediations if r.status is PastOutcome.OPEN]
    if open_ones:
        current = max(open_ones, key=lambda record: record.started_at)
        return skip(
            NoActionReason.IN_PROGRESS,
            f"a {current.action.value} remediation for {signal.service!r} started "
            f"{current.started_at.isoformat()} is still open",
        )

    built = _Context(signal=signal, rule=rule, spec=spec, state=state, pack=pack).build()
    if isinstance(built, NoAction):
        return built
    if automated and built.automated:
        # The trust ladder binds what automation does on its own; people's requests
        # have their own approvals, and notify_only plans only tell.
        level = pack.automation(signal.service)
        if level is AutomationLevel.NOTIFY:
            return skip(
                NoActionReason.AUTOMATION_NOTIFY,
                f"service {signal.service!r} is at automation level notify (remediator "
                f"{level.describe}); people are told what would have run, nothing is changed",
                plan=built,
                notify=True,
            )
        if level is AutomationLevel.APPROVE and not built.require_approval:
            built = built.model_copy(
                update={
                    "require_approval": True,
                    "explanation": f"{built.explanation}; service {signal.service!r} is at "
                    f"automation level approve, so the plan waits for approval",
                }
            )
    if not manual:
        held = _cooldown_detail(built, rule=rule, state=state, defaults=defaults, now=now)
        if held is not None:
            return skip(NoActionReason.COOLDOWN, held, plan=built)
    if automated and built.automated:
        held = _rate_limit_detail(built, state=state, defaults=defaults, now=now)
        if held is not None:
            return skip(NoActionReason.RATE_LIMITED, held, plan=built, notify=True)
    dry_run_source = _dry_run_source(rule=rule, defaults=defaults, daemon_dry_run=dry_run)
    if dry_run_source is not None:
        return skip(
            NoActionReason.DRY_RUN,
            f"{dry_run_source}; the plan is recorded, not executed",
            plan=built.model_copy(update={"dry_run": True}),
        )
    return built


def _cooldown_detail(
    plan: Plan, *, rule: Rule, state: ServiceState, defaults: Defaults, now: datetime
) -> str | None:
    """Why the same action may not run again yet for this service, if it may not."""
    cooldown = rule.cooldown if rule.cooldown is not None else defaults.cooldown
    # A plan still waiting for people, or one that never ran, cools nothing down.
    last = max(
        (r.started_at for r in state.remediations if r.action is plan.action and r.status.acted),
        default=None,
    )
    if last is None or now - last >= cooldown:
        return None
    return (
        f"{plan.action.value} ran for {plan.service!r} at {last.isoformat()}, "
        f"within the {format_duration(cooldown)} cooldown"
    )


def _rate_limit_detail(
    plan: Plan, *, state: ServiceState, defaults: Defaults, now: datetime
) -> str | None:
    """Why the service has had enough actions for a day, if it has."""
    limit = defaults.max_actions_per_service_per_day
    started = tuple(
        r.started_at
        for r in state.remediations
        if r.action is not ActionKind.NOTIFY_ONLY and r.status.acted
    )
    recent = count_since(started, now=now, window=_DAY)
    if recent < limit:
        return None
    return f"{recent} actions for {plan.service!r} in the last 24h (limit {limit})"


def _dry_run_source(*, rule: Rule, defaults: Defaults, daemon_dry_run: bool) -> str | None:
    """Who asked for dry-run, if anyone. A rule may lift the pack default, not the daemon's."""
    if daemon_dry_run:
        return "the daemon runs in dry-run mode"
    if rule.dry_run:
        return f"rule {rule.name} is dry-run"
    if defaults.dry_run and rule.dry_run is not False:
        return "the rule pack defaults to dry-run"
    return None


def _describe(signal: Signal) -> str:
    target = f"{signal.namespace or '?'}/{signal.service or '?'}"
    if signal.source is Source.ALERTMANAGER:
        return f"alert {signal.kind} ({signal.status.value}) for {target}"
    if signal.source is Source.KAFKA:
        return f"event {signal.kind} for {target}"
    return f"manual request {signal.kind} for {target}"


@dataclass(frozen=True, slots=True, kw_only=True)
class _Context:
    signal: Signal
    rule: Rule
    spec: ServiceSpec
    state: ServiceState
    pack: RulePack

    @property
    def service(self) -> str:
        assert self.signal.service is not None
        return self.signal.service

    def build(self) -> Plan | NoAction:
        action = self.rule.action
        if action is ActionKind.ROLLBACK:
            return self._rollback(why=f"{_describe(self.signal)} asks for a rollback")
        if action is ActionKind.SCALE_UP:
            return self._scale_up(why=f"{_describe(self.signal)} asks for more replicas")
        if action is ActionKind.SCALE_OR_ROLLBACK:
            return self._scale_or_rollback()
        if action is ActionKind.REVERT_MIGRATION:
            return self._revert_migration()
        if action is ActionKind.RESTORE_CONFIG:
            return self._restore_config()
        return self._plan(
            ActionKind.NOTIFY_ONLY,
            [self._notify(self.rule.description or f"rule {self.rule.name} only notifies")],
            explanation=f"{_describe(self.signal)}: rule {self.rule.name} only notifies",
        )

    # --- building blocks ---------------------------------------------------------------

    def _skip(self, reason: NoActionReason, detail: str, *, notify: bool = False) -> NoAction:
        return NoAction(
            reason=reason,
            detail=detail,
            rule=self.rule.name,
            service=self.service,
            signal_id=self.signal.id,
            notify=notify,
        )

    def _plan(
        self,
        action: ActionKind,
        steps: list[Step],
        *,
        explanation: str,
        versions: Versions | None = None,
    ) -> Plan:
        require = self.rule.require_approval
        if require is None:
            require = self.pack.defaults.require_approval
        approvers = (
            self.rule.approvers
            if self.rule.approvers is not None
            else self.spec.approvers or self.pack.defaults.approvers
        )
        return Plan(
            service=self.service,
            namespace=self.spec.namespace,
            rule=self.rule.name,
            requested_action=self.rule.action,
            action=action,
            steps=tuple(steps),
            require_approval=require,
            approvers=approvers,
            signal_id=self.signal.id,
            explanation=explanation,
            versions=versions,
        )

    @property
    def namespace(self) -> str:
        return self.spec.namespace

    def _notify(self, reason: str) -> Step:
        return NotifyStep(
            params=NotifyParams(
                namespace=self.namespace, service=self.service, signal=self.signal.kind
            ),
            reason=reason,
        )

    def _verify(self, action_steps: list[Step]) -> list[Step]:
        """The checks after a change: every Deployment it changed has rolled out, the
        health URL answers, the smoke test passes, and the triggering condition cleared.

        A plan counts as done only when they pass; a check that fails ends it needing
        people, never as a success.
        """
        steps: list[Step] = [self._wait_rollout(d) for d in _unwaited(action_steps)]
        if self.spec.health_url is not None:
            steps.append(
                VerifyHealthStep(
                    params=VerifyHealthParams(namespace=self.namespace, url=self.spec.health_url),
                    reason="every change is verified before it counts as done",
                )
            )
        if self.spec.smoke_test is not None:
            steps.append(
                VerifySmokeStep(
                    params=VerifySmokeParams(namespace=self.namespace, service=self.service),
                    reason="the service's smoke test must pass after the change",
                )
            )
        steps.append(
            VerifyConditionStep(
                params=condition_params(
                    rule=self.rule, signal=self.signal, service=self.service, spec=self.spec
                ),
                reason="the change is done only when what triggered it has cleared",
            )
        )
        steps.append(self._record_evidence(action_steps))
        return steps

    def _record_evidence(self, action_steps: list[Step]) -> Step:
        helm = next((s for s in action_steps if isinstance(s, HelmRollbackStep)), None)
        query = self.rule.verify.failed_requests_query
        return RecordEvidenceStep(
            params=RecordEvidenceParams(
                namespace=self.namespace,
                service=self.service,
                deployment=self.spec.workload,
                since=self.signal.starts_at or self.signal.received_at,
                helm_release=helm.params.release if helm is not None else None,
                # Catalog names are DNS-1123: safe inside a PromQL string literal.
                failed_requests_query=query.replace("$service", self.service).replace(
                    "$namespace", self.namespace
                ),
            ),
            reason="the record keeps what happened: events, helm history, failed requests",
        )

    # --- rollback -------------------------------------------------------------------

    @property
    def requested_target(self) -> str | None:
        """The revision or version a person asked to roll back to: a manual request
        may name one from trusted history; an alert can never choose a target."""
        if self.signal.source is not Source.MANUAL:
            return None
        return self.signal.labels.get(TARGET_LABEL) or None

    def _rollback_target(self) -> tuple[DeployRecord, DeployRecord] | str:
        """(current, target) or why there is no revision it is safe to go back to."""
        deploys = self.state.deploys_newest_first()
        if not deploys:
            return f"no deploy of {self.service!r} is recorded, so no known revision to return to"
        current = deploys[0]
        # Deployment and Helm revisions are numbers; a deploy event may have sent a version
        # in their place (``revision`` falls back to ``version``), which cannot be undone to.
        numbered = numbered_rollback(self.spec)
        if numbered and not _numbered(current):
            return (
                f"the newest deploy of {self.service!r} records {current.revision!r}, not a "
                f"revision number, so a {self.spec.rollback.strategy} rollback cannot use it"
            )
        if self.requested_target is not None:
            return requested_rollback(deploys, self.requested_target, spec=self.spec,
                                      service=self.service)  # fmt: skip
        limit = self.spec.max_revisions_back or self.pack.defaults.max_revisions_back
        candidates = deploys[1 : 1 + limit]
        for deploy in candidates:
            usable = _numbered(deploy) or not numbered
            if deploy.healthy is True and deploy.revision != current.revision and usable:
                return current, deploy
        seen = ", ".join(f"{d.revision} ({_health(d, numbered)})" for d in candidates) or "none"
        return (
            f"no revision recorded healthy among the last {limit} before the current "
            f"{current.revision} (seen: {seen})"
        )

    def _rollback(self, *, why: str) -> Plan | NoAction:
        found = self._rollback_target()
        if isinstance(found, str):
            return self._skip(NoActionReason.OUTSIDE_ROLLBACK_WINDOW, found, notify=True)
        current, target = found
        steps = self._rollback_steps(current=current, target=target)
        steps += [*self._verify(steps), self._notify("people hear about every automated change")]
        return self._plan(
            ActionKind.ROLLBACK,
            steps,
            explanation=f"{why}; rolling back from {_label(current)} to {_label(target)}, "
            f"{self._target_kind}",
            versions=_versions(current, target),
        )

    @property
    def _target_kind(self) -> str:
        if self.requested_target is not None:
            return "the revision the request names"
        return "the newest revision recorded healthy"

    def _rollback_steps(self, *, current: DeployRecord, target: DeployRecord) -> list[Step]:
        strategy = self.spec.rollback
        to_target = f"{_label(target)} is {self._target_kind}"
        ns = self.namespace
        if isinstance(strategy, RollingRollback):
            deployment = strategy.deployment or self.spec.workload
            return [
                RolloutUndoStep(
                    params=RolloutUndoParams(
                        namespace=ns,
                        deployment=deployment,
                        from_revision=_number(current),
                        to_revision=_number(target),
                    ),
                    reason=f"{_label(current)} is failing; {to_target}",
                ),
                self._wait_rollout(deployment),
            ]
        if isinstance(strategy, BlueGreenRollback):
            return [
                SwitchSelectorStep(
                    params=SwitchSelectorParams(
                        namespace=ns,
                        service_name=strategy.service_name,
                        selector_label=strategy.selector_label,
                        from_value=current.revision,
                        to_value=target.revision,
                    ),
                    reason=f"traffic goes back to the previous colour; {to_target}",
                )
            ]
        if isinstance(strategy, CanaryRollback):
            return [
                SetRouteWeightsStep(
                    params=SetRouteWeightsParams(
                        namespace=ns, route=strategy.route_name, canary_weight=0, stable_weight=100
                    ),
                    reason="the canary gets no more traffic",
                ),
                ScaleDeploymentStep(
                    # None: the size the stable side had before the canary took traffic,
                    # read when the step runs. Its size now is what the canary left it
                    # at: passing that would change nothing.
                    params=ScaleDeploymentParams(
                        namespace=ns, deployment=strategy.stable_deployment, replicas=None
                    ),
                    reason=f"the stable version carries all traffic again; {to_target}",
                ),
                ScaleDeploymentStep(
                    params=ScaleDeploymentParams(
                        namespace=ns, deployment=strategy.canary_deployment, replicas=0
                    ),
                    reason="the failing canary is stopped",
                ),
            ]
        assert isinstance(strategy, HelmRollback)
        return [
            HelmRollbackStep(
                params=HelmRollbackParams(
                    namespace=ns,
                    release=strategy.release,
                    from_revision=_number(current),
                    to_revision=_number(target),
                ),
                reason=f"{_label(current)} is failing; {to_target}",
            ),
            self._wait_rollout(self.spec.workload),
        ]

    def _wait_rollout(self, deployment: str) -> Step:
        return WaitRolloutStep(
            params=WaitRolloutParams(namespace=self.namespace, deployment=deployment),
            reason="the rollback is done only when the old revision's pods are all ready",
        )

    # --- scale ----------------------------------------------------------------------

    def _scale_up(self, *, why: str) -> Plan | NoAction:
        scale = self.spec.scale
        if scale is None:
            return self._skip(
                NoActionReason.NOT_APPLICABLE, f"service {self.service!r} has no scale bounds"
            )
        current = self.state.current_replicas
        if current is None:
            unknown = f"the current replica count of {self.service!r} is unknown"
            failed = self.state.facts_error
            if failed is None:
                return self._skip(NoActionReason.NOT_APPLICABLE, unknown)
            # A scale-up was called for but the cluster could not be read: people decide.
            return self._skip(
                NoActionReason.NOT_APPLICABLE, f"{why}, but {unknown} ({failed})", notify=True
            )
        maximum = scale.max_replicas
        if self.state.max_replicas is not None:
            maximum = min(maximum, self.state.max_replicas)
        if current >= maximum:
            return self._skip(
                NoActionReason.ESCALATED,
                f"{why}, but {self.service!r} already runs {current} replicas "
                f"(max {maximum}); escalating to people",
                notify=True,
            )
        target = min(current + scale.step, maximum)
        steps: list[Step] = [
            ScaleDeploymentStep(
                params=ScaleDeploymentParams(
                    namespace=self.namespace,
                    deployment=self.spec.workload,
                    from_replicas=current,
                    replicas=target,
                ),
                reason=f"{why}; adding {target - current} replica(s), bounded by max {maximum}",
            ),
        ]
        steps += [*self._verify(steps), self._notify("people hear about every automated change")]
        return self._plan(
            ActionKind.SCALE_UP,
            steps,
            explanation=f"{why}; scaling {self.spec.workload} from {current} to {target}",
        )

    def _scale_or_rollback(self) -> Plan | NoAction:
        window = self.pack.defaults.recent_deploy_window
        started = self.signal.starts_at or self.signal.received_at
        deploys = self.state.deploys_newest_first()
        # Differences of two datetimes always fit a timedelta; ``started - window`` does
        # not fit a datetime when an alert claims to have started in year 1.
        recent = next((d for d in deploys if _ZERO <= started - d.finished_at <= window), None)
        signal = _describe(self.signal)
        # Only when that deploy is still the newest: a later deploy means people have
        # already shipped something on top, and undoing it blindly could undo a fix.
        if recent is not None and recent is deploys[0]:
            return self._rollback(
                why=f"{signal} started {format_duration(started - recent.finished_at)} after "
                f"deploy {_label(recent)} finished (within {format_duration(window)}), so the "
                f"deploy is the likely cause"
            )
        return self._scale_up(
            why=f"{signal} with no deploy finished in the {format_duration(window)} before "
            f"it started, so load is the likely cause"
        )

    # --- database and config -----------------------------------------------------------

    def _revert_migration(self) -> Plan | NoAction:
        database = self.spec.database
        if database is None:
            return self._skip(
                NoActionReason.NOT_APPLICABLE,
                f"service {self.service!r} has no database settings",
            )
        if history_trusted(self.signal, defaults=self.pack.defaults):
            chosen = self._migration_from_event()
        else:
            chosen = self._migration_from_history()
        if isinstance(chosen, NoAction):
            return chosen
        migration_id, version = chosen
        deploys = self.state.deploys_newest_first()
        rolled_out = version is not None and bool(deploys) and deploys[0].version == version
        steps: list[Step] = [
            BackupDatabaseStep(
                params=BackupDatabaseParams(
                    namespace=self.namespace,
                    engine=database.engine,
                    dsn_secret=database.dsn_secret,
                    before_migration=migration_id,
                ),
                reason="always back up before reverting a migration",
            )
        ]
        explanation = f"{_describe(self.signal)}: reverting migration {migration_id}"
        versions: Versions | None = None
        if rolled_out:
            found = self._rollback_target()
            if isinstance(found, str):
                return self._skip(
                    NoActionReason.OUTSIDE_ROLLBACK_WINDOW,
                    f"release {version} already rolled out and must be rolled back before "
                    f"its migration is reverted, but {found}",
                    notify=True,
                )
            current, target = found
            rollback = self._rollback_steps(current=current, target=target)
            # The new code expects the new schema: take it out before the schema goes.
            steps += [
                s.model_copy(update={"reason": f"release {version} already rolled out; {s.reason}"})
                for s in rollback
            ]
            explanation += f", after rolling the application back to {_label(target)}"
            versions = _versions(current, target)
        steps += [
            RevertMigrationStep(
                params=RevertMigrationParams(
                    namespace=self.namespace,
                    engine=database.engine,
                    dsn_secret=database.dsn_secret,
                    migrations_table=database.migrations_table,
                    migration=migration_id,
                    allow_without_backup=self.rule.allow_without_backup,
                ),
                reason=f"migration {migration_id} failed; its down script restores the schema",
            ),
        ]
        steps += [*self._verify(steps), self._notify("people hear about every automated change")]
        return self._plan(
            ActionKind.REVERT_MIGRATION, steps, explanation=explanation, versions=versions
        )

    def _migration_from_event(self) -> tuple[str, str | None] | NoAction:
        """(migration, release) for a signal from a trusted source: it may name them."""
        labels = self.signal.labels
        failed = [m for m in self.state.migrations if m.status is MigrationStatus.FAILED]
        failed.sort(key=lambda m: m.at)
        migration_id = labels.get("migration") or (failed[-1].id if failed else None)
        if not migration_id:
            return self._skip(
                NoActionReason.NOT_APPLICABLE,
                f"no failed migration of {self.service!r} is known (no 'migration' label, "
                f"none recorded failed)",
            )
        record = next((m for m in failed if m.id == migration_id), None)
        return migration_id, labels.get("version") or (record.version if record else None)

    def _migration_from_history(self) -> tuple[str, str | None] | NoAction:
        """(migration, release) for an alert or a request: only the migration trusted
        history records as the service's latest, whatever the signal's labels say."""
        claimed = self.signal.labels.get("migration")
        asks = f"{_describe(self.signal)} asks to revert " + (
            f"migration {claimed!r}" if claimed else "a migration"
        )
        latest = _latest(self.state.migrations)
        sources = ", ".join(self.pack.defaults.trusted_history_sources) or "none configured"
        if latest is None:
            return self._needs_human(
                f"{asks}, but no trusted source ({sources}) recorded a migration of "
                f"{self.service!r}; only they may say which migration to revert"
            )
        seen = f"{latest.id!r} ({latest.status.value} at {latest.at.isoformat()})"
        if latest.status is MigrationStatus.REVERTED:
            return self._needs_human(
                f"{asks}, but the latest migration recorded for {self.service!r}, {seen}, "
                f"is already reverted"
            )
        if claimed and claimed != latest.id:
            return self._needs_human(
                f"{asks}, but the latest migration trusted history records for "
                f"{self.service!r} is {seen}; a signal cannot choose what to revert"
            )
        return latest.id, latest.version

    def _needs_human(self, detail: str) -> NoAction:
        return self._skip(NoActionReason.NEEDS_HUMAN, f"{detail}; people decide", notify=True)

    def _restore_config(self) -> Plan | NoAction:
        config = self.spec.config
        if config is None:
            return self._skip(
                NoActionReason.NOT_APPLICABLE,
                f"service {self.service!r} lists no configmaps to restore",
            )
        steps: list[Step] = []
        ns = self.namespace
        for name in config.configmaps:
            steps.append(
                ExportConfigStep(
                    params=ExportConfigParams(namespace=ns, configmap=name),
                    reason="keep the current config for the record and to undo the restore",
                )
            )
            steps.append(
                RestoreConfigStep(
                    params=RestoreConfigParams(namespace=ns, configmap=name, to="previous"),
                    reason="apply the previous version of the config",
                )
            )
        steps += [
            RestartWorkloadStep(
                params=RestartWorkloadParams(namespace=ns, deployment=self.spec.workload),
                reason="pods read config at start, so they restart to pick up the restored one",
            ),
        ]
        steps += [*self._verify(steps), self._notify("people hear about every automated change")]
        return self._plan(
            ActionKind.RESTORE_CONFIG,
            steps,
            explanation=f"{_describe(self.signal)}: restoring the previous config",
        )


def _versions(current: DeployRecord, target: DeployRecord) -> Versions:
    return Versions(
        revision_from=current.revision,
        revision_to=target.revision,
        version_from=current.version,
        version_to=target.version,
        image_from=current.image,
        image_to=target.image,
    )


def _unwaited(steps: list[Step]) -> list[str]:
    """Deployments a step scales up, restarts or rolls back with no rollout wait after it
    (a Deployment scaled to zero has nothing to wait for)."""
    pending: list[str] = []
    for step in steps:
        match step:
            case ScaleDeploymentStep(params=p) if p.replicas != 0:
                name = p.deployment
            case RestartWorkloadStep(params=p):
                name = p.deployment
            case WaitRolloutStep(params=p):
                if p.deployment in pending:
                    pending.remove(p.deployment)
                continue
            case _:
                continue
        if name not in pending:
            pending.append(name)
    return pending


def numbered_rollback(spec: ServiceSpec) -> bool:
    """Whether the service's rollback needs revision numbers (Deployment, Helm)."""
    return isinstance(spec.rollback, RollingRollback | HelmRollback)


def requested_rollback(
    deploys: list[DeployRecord], wanted: str, *, spec: ServiceSpec, service: str
) -> tuple[DeployRecord, DeployRecord] | str:
    """(current, target) for a request naming ``wanted`` (a revision or version), or why
    it cannot be had: only a deploy trusted history records before the current one."""
    if not deploys:
        return f"no deploy of {service!r} is recorded, so no known revision to return to"
    current = deploys[0]
    if wanted in (current.revision, current.version):
        return f"{wanted!r} is what {service!r} runs now ({_label(current)})"
    numbered = numbered_rollback(spec)
    for deploy in deploys[1:]:
        if wanted not in (deploy.revision, deploy.version) or deploy.revision == current.revision:
            continue
        if numbered and not _numbered(deploy):
            return (
                f"{wanted!r} is recorded as {deploy.revision!r}, not a revision number, so a "
                f"{spec.rollback.strategy} rollback cannot use it"
            )
        return current, deploy
    known = ", ".join(_label(d) for d in deploys[1:]) or "none"
    return (
        f"{wanted!r} is not a revision or version trusted deploy history records for "
        f"{service!r} before the current {_label(current)} (known: {known})"
    )


def _latest(migrations: tuple[MigrationRecord, ...]) -> MigrationRecord | None:
    """The newest record; of two at one instant, the later one in history order."""
    if not migrations:
        return None
    _, latest = max(enumerate(migrations), key=lambda pair: (pair[1].at, pair[0]))
    return latest


def _label(deploy: DeployRecord) -> str:
    return f"revision {deploy.revision}" + (f" ({deploy.version})" if deploy.version else "")


def _health(deploy: DeployRecord, numbered: bool) -> str:
    health = {True: "healthy", False: "unhealthy", None: "not verified"}[deploy.healthy]
    return health if _numbered(deploy) or not numbered else f"{health}, not a revision number"


def _numbered(deploy: DeployRecord) -> bool:
    """Whether the deploy's revision is a Deployment or Helm revision (counted from 1)."""
    text = deploy.revision
    return text.isascii() and text.isdigit() and int(text) > 0


def _number(deploy: DeployRecord) -> int:
    """The revision as a number, for a deploy ``_numbered`` accepted."""
    return int(deploy.revision)
