"""The decision: a table per automatic trigger, per NoAction reason, and the safety rules."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from remediator.domain.plans import (
    ActionKind,
    NoAction,
    NoActionReason,
    Plan,
    StepKind,
    decision_from_dict,
    explain,
)
from remediator.domain.rules import (
    CircuitState,
    DeployRecord,
    MigrationRecord,
    MigrationStatus,
    PastOutcome,
    RemediationRecord,
    RulePack,
    ServiceState,
    decide,
    load_rule_pack,
    match_rule,
    rule_mismatch,
)
from remediator.domain.signals import Signal, Status
from remediator.domain.steps import (
    BackupDatabaseStep,
    HelmRollbackStep,
    RolloutUndoParams,
    RolloutUndoStep,
    ScaleDeploymentParams,
    SwitchSelectorStep,
)

from .conftest import NOW, alert, event, manual, shipped_files

ALERT_START = NOW - timedelta(minutes=10)
S = StepKind


def deploys(*, newest_at: datetime, healthy_previous: bool = True) -> tuple[DeployRecord, ...]:
    """r6 and r7 healthy in the past; r8 (v1.4.0) finished at ``newest_at``."""
    return (
        DeployRecord(
            revision="6", version="v1.2.0", finished_at=NOW - timedelta(days=3), healthy=True
        ),
        DeployRecord(
            revision="7",
            version="v1.3.0",
            finished_at=NOW - timedelta(days=1),
            healthy=healthy_previous,
        ),
        DeployRecord(revision="8", version="v1.4.0", finished_at=newest_at, previous_revision="7"),
    )


RECENT = deploys(newest_at=ALERT_START - timedelta(minutes=20))  # within 30 min
OLD = deploys(newest_at=ALERT_START - timedelta(hours=2))
# What the deploy events recorded: v1.4.0's migration, the service's latest, failed.
LATEST_MIGRATION = MigrationRecord(
    id="042_add_index",
    status=MigrationStatus.FAILED,
    at=ALERT_START - timedelta(minutes=5),
    version="v1.4.0",
)
# Shipped triggers that wait for people: an alert cannot say which migration to revert.
APPROVED_TRIGGERS = {"migration-failed-alert-revert"}


def state(**changes: Any) -> ServiceState:
    base: dict[str, Any] = {"current_replicas": 4, "deploys": RECENT}
    return ServiceState.model_validate({**base, **changes})


def kinds(plan: Plan) -> list[StepKind]:
    return [step.kind for step in plan.steps]


def plan_for(pack: RulePack, signal: Signal, service_state: ServiceState | None = None) -> Plan:
    decision = decide(signal, pack=pack, state=service_state or state(), now=NOW)
    assert isinstance(decision, Plan), explain(decision)
    return decision


def skipped(
    pack: RulePack, signal: Signal, service_state: ServiceState | None = None, **kwargs: Any
) -> NoAction:
    decision = decide(signal, pack=pack, state=service_state or state(), now=NOW, **kwargs)
    assert isinstance(decision, NoAction), explain(decision)
    return decision


# --- the seven automatic triggers ----------------------------------------------------

TRIGGERS = [
    # (id, signal, state, rule, action, steps)
    (
        "health checks failing: rolling rollback",
        alert("HealthCheckFailureRate"),
        state(),
        "health-check-failure-rollback",
        ActionKind.ROLLBACK,
        [
            S.ROLLOUT_UNDO,
            S.WAIT_ROLLOUT,
            S.VERIFY_HEALTH,
            S.VERIFY_CONDITION,
            S.RECORD_EVIDENCE,
            S.NOTIFY,
        ],
    ),
    (
        "error rate: blue-green switches the selector back",
        alert("HighErrorRate", service="payments", namespace="payments"),
        state(),
        "high-error-rate-rollback",
        ActionKind.ROLLBACK,
        [S.SWITCH_SELECTOR, S.VERIFY_HEALTH, S.VERIFY_CONDITION, S.RECORD_EVIDENCE, S.NOTIFY],
    ),
    (
        "latency: canary weight to 0, stable up, canary down",
        alert("HighLatencyP99", service="search", namespace="search"),
        state(),
        "high-latency-rollback",
        ActionKind.ROLLBACK,
        [
            S.SET_ROUTE_WEIGHTS,
            S.SCALE_DEPLOYMENT,
            S.SCALE_DEPLOYMENT,
            S.WAIT_ROLLOUT,  # the stable side, scaled back up
            S.VERIFY_HEALTH,
            S.VERIFY_CONDITION,
            S.RECORD_EVIDENCE,
            S.NOTIFY,
        ],
    ),
    (
        "migration failed (event), release not rolled out: backup then revert",
        event("migration.failed", migration="042_add_index", version="v1.5.0"),
        state(),
        "migration-failed-revert",
        ActionKind.REVERT_MIGRATION,
        [
            S.BACKUP_DATABASE,
            S.REVERT_MIGRATION,
            S.VERIFY_HEALTH,
            S.VERIFY_CONDITION,
            S.RECORD_EVIDENCE,
            S.NOTIFY,
        ],
    ),
    (
        "migration failed (alert), release rolled out: backup, app rollback, revert",
        alert("MigrationFailed", migration="042_add_index"),
        state(migrations=(LATEST_MIGRATION,)),
        "migration-failed-alert-revert",
        ActionKind.REVERT_MIGRATION,
        [
            S.BACKUP_DATABASE,
            S.ROLLOUT_UNDO,
            S.WAIT_ROLLOUT,
            S.REVERT_MIGRATION,
            S.VERIFY_HEALTH,
            S.VERIFY_CONDITION,
            S.RECORD_EVIDENCE,
            S.NOTIFY,
        ],
    ),
    (
        "pods not ready: helm rollback",
        alert("PodNotReady", service="web", namespace="web"),
        state(),
        "pod-not-ready-rollback",
        ActionKind.ROLLBACK,
        [
            S.HELM_ROLLBACK,
            S.WAIT_ROLLOUT,
            S.VERIFY_HEALTH,
            S.VERIFY_CONDITION,
            S.RECORD_EVIDENCE,
            S.NOTIFY,
        ],
    ),
    (
        "memory after a recent deploy: roll back",
        alert("MemoryPressure"),
        state(deploys=RECENT),
        "memory-pressure-scale-or-rollback",
        ActionKind.ROLLBACK,
        [
            S.ROLLOUT_UNDO,
            S.WAIT_ROLLOUT,
            S.VERIFY_HEALTH,
            S.VERIFY_CONDITION,
            S.RECORD_EVIDENCE,
            S.NOTIFY,
        ],
    ),
    (
        "memory with no recent deploy: scale up",
        alert("MemoryPressure"),
        state(deploys=OLD),
        "memory-pressure-scale-or-rollback",
        ActionKind.SCALE_UP,
        [
            S.SCALE_DEPLOYMENT,
            S.WAIT_ROLLOUT,
            S.VERIFY_HEALTH,
            S.VERIFY_CONDITION,
            S.RECORD_EVIDENCE,
            S.NOTIFY,
        ],
    ),
    (
        "cpu after a recent deploy: roll back",
        alert("CPUSaturation", service="web", namespace="web"),
        state(deploys=RECENT),
        "cpu-saturation-scale-or-rollback",
        ActionKind.ROLLBACK,
        [
            S.HELM_ROLLBACK,
            S.WAIT_ROLLOUT,
            S.VERIFY_HEALTH,
            S.VERIFY_CONDITION,
            S.RECORD_EVIDENCE,
            S.NOTIFY,
        ],
    ),
    (
        "cpu with no recent deploy: scale up",
        alert("CPUSaturation"),
        state(deploys=OLD),
        "cpu-saturation-scale-or-rollback",
        ActionKind.SCALE_UP,
        [
            S.SCALE_DEPLOYMENT,
            S.WAIT_ROLLOUT,
            S.VERIFY_HEALTH,
            S.VERIFY_CONDITION,
            S.RECORD_EVIDENCE,
            S.NOTIFY,
        ],
    ),
]


@pytest.mark.parametrize(
    ("signal", "service_state", "rule", "action", "steps"),
    [case[1:] for case in TRIGGERS],
    ids=[case[0] for case in TRIGGERS],
)
def test_automatic_triggers(
    pack: RulePack,
    signal: Signal,
    service_state: ServiceState,
    rule: str,
    action: ActionKind,
    steps: list[StepKind],
) -> None:
    plan = plan_for(pack, signal, service_state)
    assert (plan.rule, plan.action, kinds(plan)) == (rule, action, steps)
    assert all(step.reason for step in plan.steps)
    assert plan.explanation
    assert not plan.dry_run
    assert plan.require_approval is (rule in APPROVED_TRIGGERS)


def test_rolling_rollback_targets_the_newest_healthy_revision(pack: RulePack) -> None:
    plan = plan_for(pack, alert("HighErrorRate"))
    assert plan.steps[0].params == RolloutUndoParams(
        namespace="shop", deployment="checkout", from_revision=8, to_revision=7
    )
    assert "revision 7 (v1.3.0) is the newest revision recorded healthy" in plan.steps[0].reason


def test_rollback_skips_unhealthy_revisions(pack: RulePack) -> None:
    service_state = state(deploys=deploys(newest_at=NOW, healthy_previous=False))
    plan = plan_for(pack, alert("HighErrorRate"), service_state)
    assert isinstance(plan.steps[0], RolloutUndoStep)
    assert plan.steps[0].params.to_revision == 6


def test_scale_up_adds_a_step_bounded_by_the_maximum(pack: RulePack) -> None:
    plan = plan_for(pack, alert("MemoryPressure"), state(deploys=OLD, current_replicas=11))
    assert plan.steps[0].params == ScaleDeploymentParams(
        namespace="shop",
        deployment="checkout",
        from_replicas=11,
        replicas=12,  # step 2, but max_replicas 12
    )


def test_state_max_replicas_caps_the_catalog(pack: RulePack) -> None:
    decision = skipped(pack, alert("CPUSaturation"), state(deploys=OLD, max_replicas=4))
    assert decision.reason is NoActionReason.ESCALATED


def test_a_deploy_after_the_alert_started_is_not_the_cause(pack: RulePack) -> None:
    after = deploys(newest_at=ALERT_START + timedelta(minutes=1))
    assert (
        plan_for(pack, alert("MemoryPressure"), state(deploys=after)).action is ActionKind.SCALE_UP
    )


def test_migration_id_falls_back_to_the_recorded_failure(pack: RulePack) -> None:
    failed = MigrationRecord(
        id="041_users",
        status=MigrationStatus.FAILED,
        at=NOW - timedelta(minutes=2),
        version="v1.4.0",
    )
    plan = plan_for(pack, event("migration.failed"), state(migrations=(failed,)))
    assert isinstance(plan.steps[0], BackupDatabaseStep)
    assert plan.steps[0].params.before_migration == "041_users"
    assert S.ROLLOUT_UNDO in kinds(plan)  # v1.4.0 is the current deploy: rolled out


# --- every NoAction reason -------------------------------------------------------------

OPEN = RemediationRecord(
    action=ActionKind.ROLLBACK, started_at=NOW - timedelta(minutes=3), status=PastOutcome.OPEN
)
DONE_ROLLBACK = RemediationRecord(
    action=ActionKind.ROLLBACK,
    started_at=NOW - timedelta(minutes=20),
    status=PastOutcome.SUCCEEDED,
)
DAY_OF_SCALING = tuple(
    RemediationRecord(
        action=ActionKind.SCALE_UP,
        started_at=NOW - timedelta(hours=hours),
        status=PastOutcome.SUCCEEDED,
    )
    for hours in (2, 8, 20)
)

REASONS = [
    # (id, signal, state, reason, detail fragment)
    (
        "resolved",
        alert("HighErrorRate", status=Status.RESOLVED),
        state(),
        NoActionReason.RESOLVED,
        "resolved",
    ),
    (
        "no service label",
        alert("HighErrorRate", service=None),
        state(),
        NoActionReason.UNROUTABLE,
        "names no service",
    ),
    (
        "service not in catalog",
        alert("HighErrorRate", service="cart"),
        state(),
        NoActionReason.NOT_IN_CATALOG,
        "not in the catalog",
    ),
    (
        "namespace differs",
        alert("HighErrorRate", namespace="staging"),
        state(),
        NoActionReason.NOT_IN_CATALOG,
        "namespace 'staging'",
    ),
    (
        "no rule",
        alert("DiskFull"),
        state(),
        NoActionReason.NO_RULE,
        "no enabled rule matches alert DiskFull",
    ),
    (
        "opted out by label",
        alert("HighErrorRate", remediation="off"),
        state(),
        NoActionReason.NO_RULE,
        "no enabled rule",
    ),
    (
        "deploy event",
        event("deployment.succeeded"),
        state(),
        NoActionReason.NO_RULE,
        "event deployment.succeeded",
    ),
    (
        "open remediation",
        alert("HighErrorRate"),
        state(remediations=(OPEN,)),
        NoActionReason.IN_PROGRESS,
        "still open",
    ),
    (
        "cooldown",
        alert("HighErrorRate"),
        state(remediations=(DONE_ROLLBACK,)),
        NoActionReason.COOLDOWN,
        "within the 30m cooldown",
    ),
    (
        "rate limit",
        alert("MemoryPressure"),
        state(deploys=OLD, remediations=DAY_OF_SCALING),
        NoActionReason.RATE_LIMITED,
        "3 actions",
    ),
    (
        "circuit open",
        alert("HighErrorRate"),
        state(circuit=CircuitState(open=True)),
        NoActionReason.CIRCUIT_OPEN,
        "open until reset",
    ),
    (
        "circuit: consecutive failures",
        alert("HighErrorRate"),
        state(circuit=CircuitState(consecutive_failures=3)),
        NoActionReason.CIRCUIT_OPEN,
        "3 consecutive remediations failed",
    ),
    (
        "circuit: too many actions in the window",
        alert("HighErrorRate"),
        state(
            circuit=CircuitState(
                automated_action_times=tuple(NOW - timedelta(minutes=m) for m in range(10))
            )
        ),
        NoActionReason.CIRCUIT_OPEN,
        "10 automated actions in the last 1h",
    ),
    (
        "no deploy history",
        alert("HighErrorRate"),
        state(deploys=()),
        NoActionReason.OUTSIDE_ROLLBACK_WINDOW,
        "no deploy",
    ),
    (
        "no healthy revision",
        alert("HighErrorRate"),
        state(deploys=tuple(d.model_copy(update={"healthy": None}) for d in RECENT)),
        NoActionReason.OUTSIDE_ROLLBACK_WINDOW,
        "no revision recorded healthy among the last 5",
    ),
    (
        "at max replicas",
        alert("MemoryPressure"),
        state(deploys=OLD, current_replicas=12),
        NoActionReason.ESCALATED,
        "max 12",
    ),
    (
        "no database",
        event("migration.failed", service="search", namespace="search", migration="x"),
        state(),
        NoActionReason.NOT_APPLICABLE,
        "no database",
    ),
    (
        "unknown migration",
        event("migration.failed"),
        state(),
        NoActionReason.NOT_APPLICABLE,
        "no failed migration",
    ),
    (
        "alert names a migration the trusted history does not",
        alert("MigrationFailed", migration="001_init"),
        state(migrations=(LATEST_MIGRATION,)),
        NoActionReason.NEEDS_HUMAN,
        "latest migration trusted history records for 'checkout' is '042_add_index'",
    ),
    (
        "no scale bounds known",
        alert("MemoryPressure"),
        state(deploys=OLD, current_replicas=None),
        NoActionReason.NOT_APPLICABLE,
        "replica count",
    ),
]


@pytest.mark.parametrize(
    ("signal", "service_state", "reason", "fragment"),
    [case[1:] for case in REASONS],
    ids=[case[0] for case in REASONS],
)
def test_no_action_reasons(
    pack: RulePack,
    signal: Signal,
    service_state: ServiceState,
    reason: NoActionReason,
    fragment: str,
) -> None:
    decision = skipped(pack, signal, service_state)
    assert decision.reason is reason
    assert fragment in decision.detail
    assert decision.signal_id == signal.id


def test_every_reason_is_covered() -> None:
    covered = {case[3] for case in REASONS} | {NoActionReason.DRY_RUN}
    # A pack with a service at automation level notify: test_rules_automation.py.
    covered |= {NoActionReason.AUTOMATION_NOTIFY}
    # The engine records internal errors (tests/unit/engine); the rules never return one.
    assert covered == set(NoActionReason) - {NoActionReason.INTERNAL_ERROR}


def test_unreadable_replicas_skip_a_scale_up_and_people_hear_why(pack: RulePack) -> None:
    failed = skipped(
        pack,
        alert("MemoryPressure"),
        state(deploys=OLD, current_replicas=None, facts_error="reading it failed: 403"),
    )
    unknown = skipped(pack, alert("MemoryPressure"), state(deploys=OLD, current_replicas=None))
    assert (failed.reason, unknown.reason) == (NoActionReason.NOT_APPLICABLE,) * 2
    assert "is unknown (reading it failed: 403)" in failed.detail
    assert (failed.notify, unknown.notify) == (True, False)
    # A rollback needs no replica count: it still plans.
    rollback = plan_for(
        pack, alert("HighErrorRate"), state(current_replicas=None, facts_error="403")
    )
    assert rollback.action is ActionKind.ROLLBACK


def test_resolved_alerts_still_name_their_rule(pack: RulePack) -> None:
    decision = skipped(pack, alert("HighErrorRate", status=Status.RESOLVED))
    assert decision.rule == "high-error-rate-rollback"


def test_people_hear_when_automation_stops(pack: RulePack) -> None:
    circuit = skipped(pack, alert("HighErrorRate"), state(circuit=CircuitState(open=True)))
    escalated = skipped(pack, alert("MemoryPressure"), state(deploys=OLD, current_replicas=12))
    cooldown = skipped(pack, alert("HighErrorRate"), state(remediations=(DONE_ROLLBACK,)))
    assert (circuit.notify, escalated.notify, cooldown.notify) == (True, True, False)


def test_old_actions_fall_out_of_the_windows(pack: RulePack) -> None:
    old = RemediationRecord(
        action=ActionKind.ROLLBACK,
        started_at=NOW - timedelta(hours=25),
        status=PastOutcome.FAILED,
    )
    circuit = CircuitState(
        automated_action_times=tuple(NOW - timedelta(hours=2, minutes=m) for m in range(20))
    )
    plan_for(pack, alert("HighErrorRate"), state(remediations=(old,) * 5, circuit=circuit))


# --- dry run ---------------------------------------------------------------------------


def with_rules(rules: str, defaults: str = "") -> RulePack:
    files = {name: text for name, text in shipped_files().items() if name.endswith("catalog.yaml")}
    files["extra.yaml"] = rules + defaults
    return load_rule_pack(files)


ERROR_RULE = """\
rules:
  - name: errors
    match: {source: alertmanager, kinds: [HighErrorRate]}
    action: rollback
"""


@pytest.mark.parametrize(
    ("rule_extra", "defaults", "global_dry_run", "expected"),
    [
        ("", "", True, "the daemon runs in dry-run mode"),
        ("    dry_run: true\n", "", False, "rule errors is dry-run"),
        ("", "defaults: {dry_run: true}\n", False, "the rule pack defaults to dry-run"),
        ("    dry_run: false\n", "defaults: {dry_run: true}\n", False, None),
        ("    dry_run: false\n", "", True, "the daemon runs in dry-run mode"),
    ],
)
def test_dry_run(
    rule_extra: str, defaults: str, global_dry_run: bool, expected: str | None
) -> None:
    pack = with_rules(ERROR_RULE + rule_extra, defaults)
    decision = decide(
        alert("HighErrorRate"), pack=pack, state=state(), now=NOW, dry_run=global_dry_run
    )
    if expected is None:
        assert isinstance(decision, Plan)
        return
    assert isinstance(decision, NoAction)
    assert decision.reason is NoActionReason.DRY_RUN
    assert expected in decision.detail
    assert decision.plan is not None
    assert decision.plan.dry_run
    assert kinds(decision.plan)[0] is S.ROLLOUT_UNDO


# --- rule overrides and manual requests ---------------------------------------------------


def test_rule_cooldown_overrides_the_default() -> None:
    pack = with_rules(ERROR_RULE + "    cooldown: 10m\n")
    assert isinstance(
        decide(
            alert("HighErrorRate"), pack=pack, state=state(remediations=(DONE_ROLLBACK,)), now=NOW
        ),
        Plan,
    )


def test_cooldown_is_per_action(pack: RulePack) -> None:
    # A rollback 20 min ago does not hold back a scale-up.
    plan = plan_for(
        pack, alert("MemoryPressure"), state(deploys=OLD, remediations=(DONE_ROLLBACK,))
    )
    assert plan.action is ActionKind.SCALE_UP


def test_require_approval_default_and_override() -> None:
    approving = with_rules(ERROR_RULE, "defaults: {require_approval: true}\n")
    plan = plan_for(approving, alert("HighErrorRate"))
    assert plan.require_approval
    assert plan.approvers == ("tech-lead",)
    waived = with_rules(
        ERROR_RULE + "    require_approval: false\n", "defaults: {require_approval: true}\n"
    )
    assert not plan_for(waived, alert("HighErrorRate")).require_approval


@pytest.mark.parametrize(
    ("scenario", "approvers"),
    [
        ("severe_functional_defect", ("product-manager", "tech-lead")),
        ("data_consistency", ("dba", "tech-lead")),
        ("security_vulnerability", ("security-lead", "tech-lead")),
        ("performance_degradation", ("ops-lead", "tech-lead")),
        ("user_experience", ("product-manager",)),
        ("third_party_failure", ("tech-lead",)),
    ],
)
def test_manual_scenarios_need_their_approvers(
    pack: RulePack, scenario: str, approvers: tuple[str, ...]
) -> None:
    plan = plan_for(pack, manual("rollback", scenario=scenario))
    assert plan.require_approval
    assert plan.approvers == approvers
    assert plan.action is ActionKind.ROLLBACK


def test_manual_requests_bypass_cooldown_and_circuit_but_not_open_work(pack: RulePack) -> None:
    busy = state(remediations=(DONE_ROLLBACK,), circuit=CircuitState(open=True))
    assert isinstance(
        decide(manual("rollback", scenario="data_consistency"), pack=pack, state=busy, now=NOW),
        Plan,
    )
    decision = skipped(
        pack, manual("rollback", scenario="data_consistency"), state(remediations=(OPEN,))
    )
    assert decision.reason is NoActionReason.IN_PROGRESS


WAITING_ROLLBACK = RemediationRecord(
    action=ActionKind.ROLLBACK, started_at=NOW - timedelta(minutes=3), status=PastOutcome.WAITING,
    manual=True,
)  # fmt: skip
NEVER_RAN = RemediationRecord(
    action=ActionKind.ROLLBACK, started_at=NOW - timedelta(minutes=5),
    status=PastOutcome.CANCELLED,
)  # fmt: skip


def test_a_request_waiting_for_approval_neither_blocks_nor_cools_down_automation(
    pack: RulePack,
) -> None:
    # An alert's rollback while a person's request waits: the automation acts.
    plan = plan_for(pack, alert("HighErrorRate"), state(remediations=(WAITING_ROLLBACK,)))
    assert plan.action is ActionKind.ROLLBACK
    # A plan that never ran (rejected, expired, cancelled) cools nothing down either,
    # and neither counts toward the daily limit.
    plan = plan_for(
        pack, alert("HighErrorRate"),
        state(remediations=(NEVER_RAN, WAITING_ROLLBACK, *DAY_OF_SCALING[:2])),
    )  # fmt: skip
    assert plan.action is ActionKind.ROLLBACK
    # What did run still cools down.
    held = skipped(pack, alert("HighErrorRate"), state(remediations=(DONE_ROLLBACK,)))
    assert held.reason is NoActionReason.COOLDOWN


def test_a_request_may_name_its_target_from_trusted_history(pack: RulePack) -> None:
    for wanted in ("6", "v1.2.0"):
        plan = plan_for(pack, manual("rollback", scenario="user_experience", target=wanted))
        undo = plan.steps[0]
        assert isinstance(undo, RolloutUndoStep)
        assert (undo.params.from_revision, undo.params.to_revision) == (8, 6)
        assert "the revision the request names" in plan.explanation
    # Without a target: the newest revision recorded healthy, as for alerts.
    plan = plan_for(pack, manual("rollback", scenario="user_experience"))
    assert isinstance(plan.steps[0], RolloutUndoStep)
    assert plan.steps[0].params.to_revision == 7


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("9", "'9' is not a revision or version trusted deploy history records"),
        ("8", "'8' is what 'checkout' runs now"),
        ("v1.4.0", "'v1.4.0' is what 'checkout' runs now"),
    ],
)
def test_a_request_cannot_name_a_target_history_does_not_offer(
    pack: RulePack, target: str, why: str
) -> None:
    decision = skipped(pack, manual("rollback", scenario="user_experience", target=target))
    assert decision.reason is NoActionReason.OUTSIDE_ROLLBACK_WINDOW
    assert why in decision.detail


def test_an_alert_can_never_choose_the_target(pack: RulePack) -> None:
    forged = alert("HighErrorRate")
    forged = Signal(**{**{f: getattr(forged, f) for f in forged.__slots__ if f != "id"},
                       "labels": {**forged.labels, "target": "6"}})  # fmt: skip
    plan = plan_for(pack, forged)
    assert isinstance(plan.steps[0], RolloutUndoStep)
    assert plan.steps[0].params.to_revision == 7  # the newest healthy, not the label's


def test_manual_restore_config(pack: RulePack) -> None:
    plan = plan_for(pack, manual("restore_config"))
    assert kinds(plan) == [
        S.EXPORT_CONFIG,
        S.RESTORE_CONFIG,
        S.RESTART_WORKLOAD,
        S.WAIT_ROLLOUT,  # pods restarted with the restored config are all ready
        S.VERIFY_HEALTH,
        S.VERIFY_CONDITION,
        S.RECORD_EVIDENCE,
        S.NOTIFY,
    ]


def test_notify_only_is_not_held_by_the_circuit(pack: RulePack) -> None:
    plan = plan_for(pack, event("deployment.failed"), state(circuit=CircuitState(open=True)))
    assert plan.action is ActionKind.NOTIFY_ONLY
    assert kinds(plan) == [S.NOTIFY]
    assert not plan.automated


# --- storms, serialisation, explanation -------------------------------------------------


def test_an_alert_storm_yields_one_plan(pack: RulePack) -> None:
    """1,000 firing alerts for one service: one plan, the rest skipped with reasons."""
    service_state = state()
    decisions = []
    for index in range(1000):
        signal = alert("HighErrorRate", pod=f"checkout-{index}")
        decision = decide(signal, pack=pack, state=service_state, now=NOW)
        decisions.append(decision)
        if isinstance(decision, Plan):  # what the engine records before the next decision
            opened = RemediationRecord(
                action=decision.action, started_at=NOW, status=PastOutcome.OPEN
            )
            service_state = service_state.model_copy(update={"remediations": (opened,)})
    plans = [d for d in decisions if isinstance(d, Plan)]
    assert len(plans) == 1
    assert {d.reason for d in decisions if isinstance(d, NoAction)} == {NoActionReason.IN_PROGRESS}


def test_decisions_are_json_and_round_trip(pack: RulePack) -> None:
    for decision in (
        plan_for(pack, alert("MemoryPressure")),
        decide(alert("HighErrorRate"), pack=pack, state=state(), now=NOW, dry_run=True),
        skipped(pack, alert("DiskFull")),
    ):
        data = json.loads(json.dumps(decision.to_dict()))
        assert decision_from_dict(data) == decision


def test_explain_tells_the_story(pack: RulePack) -> None:
    text = explain(plan_for(pack, alert("MemoryPressure")))
    assert text.splitlines()[0] == "plan: rollback shop/checkout (rule asked for scale_or_rollback)"
    assert "rule: memory-pressure-scale-or-rollback" in text
    assert "within 30m" in text
    assert "1. rollout_undo" in text
    assert "because" in text
    assert explain(skipped(pack, alert("DiskFull"))).startswith("no action (no_rule): ")


# --- invariants over arbitrary inputs -----------------------------------------------------

ALERT_NAMES = st.sampled_from(
    [
        "HealthCheckFailureRate",
        "HighErrorRate",
        "HighLatencyP99",
        "PodNotReady",
        "MemoryPressure",
        "CPUSaturation",
        "MigrationFailed",
        "DiskFull",
    ]
)
SERVICES = st.sampled_from(["checkout", "payments", "search", "web", "cart"])
STATES = st.builds(
    lambda replicas, deploy_minutes, healthy, circuit_open: ServiceState(
        current_replicas=replicas,
        deploys=tuple(
            DeployRecord(
                revision=str(index),
                finished_at=NOW - timedelta(minutes=minutes),
                healthy=healthy,
            )
            for index, minutes in enumerate(sorted(deploy_minutes, reverse=True))
        ),
        circuit=CircuitState(open=circuit_open),
    ),
    st.none() | st.integers(min_value=0, max_value=20),
    st.lists(st.integers(min_value=0, max_value=5000), max_size=4, unique=True),
    st.sampled_from([True, False, None]),
    st.booleans(),
)


@settings(max_examples=200)
@given(name=ALERT_NAMES, service=SERVICES, service_state=STATES)
def test_resolved_alerts_never_start_actions(
    pack: RulePack, name: str, service: str, service_state: ServiceState
) -> None:
    namespace = pack.services[service].namespace if service in pack.services else "shop"
    signal = alert(name, service=service, namespace=namespace, status=Status.RESOLVED)
    decision = decide(signal, pack=pack, state=service_state, now=NOW)
    assert isinstance(decision, NoAction)
    assert decision.reason is NoActionReason.RESOLVED


@settings(max_examples=200)
@given(name=ALERT_NAMES, service=SERVICES, service_state=STATES)
def test_an_open_circuit_lets_no_automated_plan_through(
    pack: RulePack, name: str, service: str, service_state: ServiceState
) -> None:
    namespace = pack.services[service].namespace if service in pack.services else "shop"
    opened = service_state.model_copy(update={"circuit": CircuitState(open=True)})
    decision = decide(
        alert(name, service=service, namespace=namespace), pack=pack, state=opened, now=NOW
    )
    assert not (isinstance(decision, Plan) and decision.automated)


@settings(max_examples=200)
@given(name=ALERT_NAMES, service=SERVICES, service_state=STATES)
def test_plans_only_roll_back_to_healthy_revisions(
    pack: RulePack, name: str, service: str, service_state: ServiceState
) -> None:
    namespace = pack.services[service].namespace if service in pack.services else "shop"
    decision = decide(
        alert(name, service=service, namespace=namespace), pack=pack, state=service_state, now=NOW
    )
    healthy = {d.revision for d in service_state.deploys if d.healthy}
    if isinstance(decision, Plan):
        for step in decision.steps:
            if isinstance(step, RolloutUndoStep | HelmRollbackStep):
                assert str(step.params.to_revision) in healthy
            if isinstance(step, SwitchSelectorStep):
                assert step.params.to_value in healthy
        assert json.loads(json.dumps(decision.to_dict()))["steps"]


# --- times at the edges of what datetime can hold ----------------------------------------

OFFSETS = st.sampled_from([UTC, timezone(timedelta(hours=1)), timezone(timedelta(hours=-1))])
EDGES = st.sampled_from([datetime.min, datetime.max]).map(lambda t: t.replace(tzinfo=UTC))
ANY_TIME = EDGES | st.datetimes(timezones=OFFSETS)  # year 1 to year 9999


@pytest.mark.parametrize(
    "starts_at",
    [
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(1, 1, 1, 0, 10, tzinfo=timezone(timedelta(hours=1))),
        datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-1))),
    ],
)
def test_an_alert_from_the_edge_of_time_is_decided(pack: RulePack, starts_at: datetime) -> None:
    # No deploy finished in the 30 minutes before it "started": load, not a deploy.
    plan = plan_for(pack, alert("CPUSaturation", starts_at=starts_at), state(deploys=RECENT))
    assert plan.action is ActionKind.SCALE_UP


def test_windows_of_any_length_hold_at_any_time(pack: RulePack) -> None:
    eons = timedelta(days=999_999_999)
    defaults = pack.defaults.model_copy(
        update={
            "recent_deploy_window": eons,
            "circuit_breaker": pack.defaults.circuit_breaker.model_copy(update={"window": eons}),
        }
    )
    long_pack = pack.model_copy(update={"defaults": defaults})
    first_deploy = DeployRecord(revision="1", finished_at=datetime(1, 1, 1, tzinfo=UTC))
    decision = decide(
        alert("CPUSaturation", starts_at=datetime(9999, 12, 31, tzinfo=UTC)),
        pack=long_pack,
        state=state(
            deploys=(first_deploy,),
            circuit=CircuitState(automated_action_times=(datetime(1, 1, 1, tzinfo=UTC),)),
        ),
        now=NOW,
    )
    # The deploy is within the (endless) window, so it is the likely cause; with no
    # healthy revision before it there is nothing to roll back to.
    assert isinstance(decision, NoAction)
    assert decision.reason is NoActionReason.OUTSIDE_ROLLBACK_WINDOW


@settings(max_examples=300)
@given(
    name=ALERT_NAMES,
    starts_at=ANY_TIME,
    deploy_times=st.lists(ANY_TIME, max_size=3),
    action_times=st.lists(ANY_TIME, max_size=3),
    remediation_times=st.lists(ANY_TIME, max_size=3),
)
def test_decide_never_raises_for_any_representable_time(
    pack: RulePack,
    name: str,
    starts_at: datetime,
    deploy_times: list[datetime],
    action_times: list[datetime],
    remediation_times: list[datetime],
) -> None:
    service_state = ServiceState(
        current_replicas=4,
        deploys=tuple(
            DeployRecord(revision=str(i), finished_at=t, healthy=i % 2 == 0)
            for i, t in enumerate(deploy_times)
        ),
        remediations=tuple(
            RemediationRecord(
                action=ActionKind.SCALE_UP, started_at=t, status=PastOutcome.SUCCEEDED
            )
            for t in remediation_times
        ),
        circuit=CircuitState(automated_action_times=tuple(action_times)),
    )
    decision = decide(alert(name, starts_at=starts_at), pack=pack, state=service_state, now=NOW)
    assert explain(decision)


def test_canary_abort_scales_the_stable_side_to_its_pre_canary_size(pack: RulePack) -> None:
    # The stable side's size now is what the canary left it at (4 here): the plan must
    # not pass it, or the scale step changes nothing. None: the pre-canary size, read
    # when the step runs.
    plan = plan_for(pack, alert("HighLatencyP99", service="search", namespace="search"))
    scales = [step for step in plan.steps if step.kind is S.SCALE_DEPLOYMENT]
    stable, canary = (step.params for step in scales)
    assert isinstance(stable, ScaleDeploymentParams)
    assert isinstance(canary, ScaleDeploymentParams)
    assert (stable.replicas, stable.from_replicas) == (None, None)
    assert canary.replicas == 0


# --- matching --------------------------------------------------------------------------

MATCHING_RULES = """\
rules:
  - name: disabled-errors
    enabled: false
    match: {source: alertmanager, kinds: [HighErrorRate]}
    action: rollback
  - name: only-payments
    match: {source: alertmanager, kinds: [HighErrorRate], services: [payments]}
    action: rollback
  - name: critical-any-kind
    match: {source: alertmanager, matchers: ['severity=~"crit.*"']}
    action: notify_only
  - name: errors
    match: {source: alertmanager, kinds: [HighErrorRate, HighLatencyP99]}
    action: rollback
  - name: events
    match: {source: kafka, kinds: [HighErrorRate]}
    action: notify_only
"""
SOURCES = st.sampled_from([alert, event, manual])
KINDS = st.sampled_from(["HighErrorRate", "HighLatencyP99", "Other", "rollback", "HighErrorRatE"])


@given(
    make=SOURCES,
    kind=KINDS,
    service=st.sampled_from(["checkout", "payments", "elsewhere"]),
    severity=st.sampled_from(["critical", "warning", ""]),
)
def test_the_rule_matched_is_the_first_without_a_mismatch(
    make: Any, kind: str, service: str, severity: str
) -> None:
    """match_rule skips the reasons; the answer is rule_mismatch's, in pack order."""
    pack = with_rules(MATCHING_RULES)
    labels = {"severity": severity} if severity else {}
    signal = make(kind, service=service, **labels)
    first = next((r for r in pack.rules if rule_mismatch(r, signal) is None), None)
    assert match_rule(signal, pack=pack) == first
    assert match_rule(signal, pack=pack) == first  # and again, from the kept candidates


def test_kinds_a_sender_makes_up_do_not_grow_the_kept_candidates_without_bound() -> None:
    pack = with_rules(MATCHING_RULES)
    for n in range(5000):
        assert match_rule(alert(f"Made{n}"), pack=pack) is None
    assert match_rule(alert("Made1", severity="critical"), pack=pack).name == "critical-any-kind"
    assert len(pack.rule_index.kept) <= 4096
    # The kept candidates are no part of what the pack is.
    assert pack == with_rules(MATCHING_RULES)
    assert "rule_index" not in pack.model_dump()


def test_a_copy_with_other_rules_matches_with_its_own() -> None:
    pack = with_rules(MATCHING_RULES)
    signal = alert("HighErrorRate")
    assert match_rule(signal, pack=pack).name == "errors"
    rules = tuple(r for r in pack.rules if r.name != "errors")
    assert match_rule(signal, pack=pack.model_copy(update={"rules": rules})) is None
    assert match_rule(signal, pack=pack).name == "errors"
