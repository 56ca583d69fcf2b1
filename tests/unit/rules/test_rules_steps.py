"""Typed plan steps: one params model per kind, checked when a plan is built or read back,
stored in the same ``{kind, params, reason}`` form as before."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from remediator.domain.plans import NoAction, NoActionReason, Plan, StepKind, explain
from remediator.domain.rules import DeployRecord, RulePack, ServiceState, decide, load_rule_pack
from remediator.domain.signals import Signal
from remediator.domain.steps import (
    STEP_TYPES,
    RevertMigrationStep,
    RolloutUndoParams,
    RolloutUndoStep,
    ScaleDeploymentParams,
    ScaleDeploymentStep,
    Step,
    StepParams,
    step_from_dict,
)

from .conftest import NOW, alert, event, shipped_files
from .test_rules_decide import OLD, TRIGGERS, state

# --- one model per kind -----------------------------------------------------------------


def test_every_step_kind_has_a_step_class_with_its_own_params_model() -> None:
    assert set(STEP_TYPES) == set(StepKind)
    params_models = set()
    for kind, step_type in STEP_TYPES.items():
        assert step_type.model_fields["kind"].default is kind
        params_model = step_type.model_fields["params"].annotation
        assert isinstance(params_model, type) and issubclass(params_model, StepParams)
        assert params_model is not StepParams, kind
        params_models.add(params_model)
    assert len(params_models) == len(StepKind)  # no two kinds share a params model


@pytest.mark.parametrize("kind", list(StepKind), ids=str)
def test_the_kind_picks_the_step_class(kind: StepKind) -> None:
    # Every kind names its namespace; nothing else is shared, so each kind refuses the
    # bare minimum and names a parameter of its own as missing.
    with pytest.raises(ValidationError) as refused:
        step_from_dict({"kind": kind.value, "params": {"namespace": "shop"}, "reason": "r"})
    missing = {err["loc"][-1] for err in refused.value.errors() if err["type"] == "missing"}
    own = {
        name
        for name, field in STEP_TYPES[kind].model_fields["params"].annotation.model_fields.items()
        if field.is_required() and name != "namespace"
    }
    assert missing == own and own


# --- refused when built -----------------------------------------------------------------

UNDO = {"namespace": "shop", "deployment": "checkout", "from_revision": 8, "to_revision": 7}
REVERT = {
    "namespace": "shop",
    "engine": "postgres",
    "dsn_secret": "checkout-db",
    "migrations_table": "schema_migrations",
    "migration": "042_add_index",
    "allow_without_backup": False,
}
SCALE_UP = {"namespace": "shop", "deployment": "checkout", "from_replicas": 4, "replicas": 6}

REFUSED = [
    # (id, kind, params, field named, pydantic error type)
    ("null revision", "rollout_undo", {**UNDO, "to_revision": None}, "to_revision", "int_type"),
    (
        "missing",
        "rollout_undo",
        {k: v for k, v in UNDO.items() if k != "to_revision"},
        "to_revision",
        "missing",
    ),
    (
        "misspelled",
        "wait_rollout",
        {"namespace": "shop", "deploymnet": "x"},
        "deploymnet",
        "extra_forbidden",
    ),
    ("unknown", "rollout_undo", {**UNDO, "force": True}, "force", "extra_forbidden"),
    (
        "not a number",
        "rollout_undo",
        {**UNDO, "to_revision": "seven"},
        "to_revision",
        "int_parsing",
    ),
    (
        "revision 0",
        "helm_rollback",
        {"namespace": "web", "release": "web", "from_revision": 2, "to_revision": 0},
        "to_revision",
        "greater_than",
    ),
    (
        "negative replicas",
        "scale_deployment",
        {**SCALE_UP, "replicas": -1},
        "replicas",
        "greater_than_equal",
    ),
    (
        "a number for a name",
        "restart_workload",
        {"namespace": "shop", "deployment": 5},
        "deployment",
        "string_type",
    ),
    (
        "empty namespace",
        "verify_health",
        {"namespace": "", "url": "http://x/healthz"},
        "namespace",
        "string_too_short",
    ),
    (
        "not a bool",
        "revert_migration",
        {**REVERT, "allow_without_backup": "maybe"},
        "allow_without_backup",
        "bool_parsing",
    ),
    (
        "unknown engine",
        "backup_database",
        {"namespace": "shop", "engine": "oracle", "dsn_secret": None, "before_migration": "042"},
        "engine",
        "literal_error",
    ),
    (
        "restore to what",
        "restore_config",
        {"namespace": "shop", "configmap": "c", "to": "latest"},
        "to",
        "literal_error",
    ),
]


@pytest.mark.parametrize(
    ("kind", "params", "field", "error"),
    [case[1:] for case in REFUSED],
    ids=[case[0] for case in REFUSED],
)
def test_a_step_with_a_bad_parameter_is_refused_naming_it(
    kind: str, params: dict[str, Any], field: str, error: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        step_from_dict({"kind": kind, "params": params, "reason": "r"})
    found = [(err["loc"], err["type"]) for err in refused.value.errors()]
    assert any(loc[-1] == field and kind_ == error for loc, kind_ in found), found
    assert field in str(refused.value)
    # The typed constructors refuse the same: decide cannot build it either.
    params_model = STEP_TYPES[StepKind(kind)].model_fields["params"].annotation
    with pytest.raises(ValidationError, match=field):
        params_model(**params)


def test_a_scale_up_must_name_its_target() -> None:
    with pytest.raises(ValidationError, match="from_replicas"):
        ScaleDeploymentParams(
            namespace="shop", deployment="checkout", from_replicas=4, replicas=None
        )


def test_a_step_of_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValidationError, match="teleport"):
        step_from_dict({"kind": "teleport", "params": {"namespace": "shop"}, "reason": "r"})


def test_a_plan_read_back_with_a_bad_step_names_the_step_and_the_field() -> None:
    stored = plan_for(alert("HighErrorRate")).to_dict()
    stored["steps"][0]["params"]["to_revison"] = stored["steps"][0]["params"].pop("to_revision")
    with pytest.raises(ValidationError) as refused:
        Plan.model_validate(stored)
    locs = {err["loc"] for err in refused.value.errors()}
    assert ("steps", 0, "rollout_undo", "params", "to_revison") in locs
    assert ("steps", 0, "rollout_undo", "params", "to_revision") in locs


# --- the stored form --------------------------------------------------------------------


def plan_for(signal: Signal, service_state: ServiceState | None = None) -> Plan:
    decision = decide(signal, pack=PACK, state=service_state or state(), now=NOW)
    assert isinstance(decision, Plan), explain(decision)
    return decision


# The shipped pack plus a rule restoring config: no shipped rule does, the catalog can.
RESTORE_RULE = """
rules:
  - name: config-restore
    match:
      source: alertmanager
      kinds: [ConfigBroken]
    action: restore_config
"""
# A service with a smoke test: the shipped catalog only shows one in a comment.
SMOKE_SERVICE = """
services:
  inventory:
    namespace: inventory
    workload: inventory
    rollback: {strategy: rolling}
    smoke_test:
      image: registry.example.com/inventory-smoke:1
      command: [bin/smoke, --quick]
      timeout: 2m
"""
PACK: RulePack = load_rule_pack(
    {**shipped_files(), "zz-restore.yaml": RESTORE_RULE, "zz-smoke.yaml": SMOKE_SERVICE}
)

SCENARIOS = [
    *[(case[1], case[2]) for case in TRIGGERS],
    (alert("ConfigBroken"), state()),
    (event("deployment.failed"), state()),
    (alert("HighErrorRate", service="inventory", namespace="inventory"), state()),
]


def all_planned_steps() -> list[Step]:
    return [step for signal, facts in SCENARIOS for step in plan_for(signal, facts).steps]


def test_the_scenarios_cover_every_step_kind() -> None:
    assert {step.kind for step in all_planned_steps()} == set(StepKind)


@pytest.mark.parametrize(
    ("signal", "service_state"), SCENARIOS, ids=[f"{s.kind}-{s.service}" for s, _ in SCENARIOS]
)
def test_planned_steps_survive_the_journal_unchanged(
    signal: Signal, service_state: ServiceState
) -> None:
    plan = plan_for(signal, service_state)
    stored = json.loads(json.dumps(plan.to_dict()))
    assert Plan.model_validate(stored) == plan
    for step, stored_step in zip(plan.steps, stored["steps"], strict=True):
        assert list(stored_step) == ["kind", "params", "reason"]
        assert stored_step["params"]["namespace"] == plan.namespace
        read_back = step_from_dict(stored_step)
        assert read_back == step and type(read_back) is type(step)


def test_the_stored_form_keeps_the_names_and_order_of_the_params() -> None:
    [undo, *_] = plan_for(alert("HighErrorRate")).steps
    assert undo.to_dict() == {
        "kind": "rollout_undo",
        "params": {
            "namespace": "shop",
            "deployment": "checkout",
            "from_revision": 8,
            "to_revision": 7,
        },
        "reason": undo.reason,
    }
    assert list(undo.to_dict()["params"]) == ["namespace", "deployment", "from_revision",
                                              "to_revision"]  # fmt: skip


def test_only_a_scale_up_stores_from_replicas() -> None:
    canary = plan_for(
        alert("HighLatencyP99", service="search", namespace="search"), state(current_replicas=None)
    )
    stable = canary.steps[1]
    assert isinstance(stable, ScaleDeploymentStep)
    assert stable.to_dict()["params"] == {
        "namespace": "search",
        "deployment": "search-stable",
        "replicas": None,
    }
    [up, *_] = plan_for(alert("MemoryPressure"), state(deploys=OLD)).steps
    assert list(up.to_dict()["params"]) == ["namespace", "deployment", "from_replicas",
                                            "replicas"]  # fmt: skip


def test_explain_prints_the_params_in_their_stored_order() -> None:
    text = explain(plan_for(alert("ConfigBroken")))
    assert "1. export_config namespace=shop configmap=checkout-config" in text
    assert "2. restore_config namespace=shop configmap=checkout-config to=previous" in text
    assert "3. restart_workload namespace=shop deployment=checkout" in text


def test_decisions_journaled_before_typed_steps_still_load() -> None:
    # As the engine journaled them: revisions as strings, and (in the first releases)
    # no allow_without_backup on a revert.
    journaled = {
        "service": "checkout",
        "namespace": "shop",
        "rule": "migration-failed-revert",
        "requested_action": "revert_migration",
        "action": "revert_migration",
        "steps": [
            {
                "kind": "rollout_undo",
                "reason": "r",
                "params": {
                    "namespace": "shop",
                    "deployment": "checkout",
                    "from_revision": "8",
                    "to_revision": "7",
                },
            },
            {
                "kind": "revert_migration",
                "reason": "r",
                "params": {k: v for k, v in REVERT.items() if k != "allow_without_backup"},
            },
        ],
    }
    plan = Plan.model_validate(journaled)
    undo, revert = plan.steps
    assert isinstance(undo, RolloutUndoStep) and undo.params == RolloutUndoParams(**UNDO)
    assert isinstance(revert, RevertMigrationStep)
    assert revert.params.allow_without_backup is False


# --- revision numbers ---------------------------------------------------------------------


def history(*revisions: tuple[str, bool | None]) -> ServiceState:
    """Deploys oldest first, one a day, the newest an hour before the alert."""
    count = len(revisions)
    return state(
        deploys=tuple(
            DeployRecord(
                revision=revision,
                finished_at=NOW - timedelta(days=count - 1 - index, hours=1),
                healthy=healthy,
            )
            for index, (revision, healthy) in enumerate(revisions)
        )
    )


def test_a_rolling_rollback_skips_a_healthy_deploy_without_a_revision_number() -> None:
    facts = history(("5", True), ("v1.3.0", True), ("8", None))
    [undo, *_] = plan_for(alert("HighErrorRate"), facts).steps
    assert isinstance(undo, RolloutUndoStep)
    assert (undo.params.from_revision, undo.params.to_revision) == (8, 5)


def test_no_revision_number_to_go_back_to_is_a_decision_not_a_crash() -> None:
    facts = history(("v1.3.0", True), ("8", None))
    decision = decide(alert("HighErrorRate"), pack=PACK, state=facts, now=NOW)
    assert isinstance(decision, NoAction)
    assert decision.reason is NoActionReason.OUTSIDE_ROLLBACK_WINDOW and decision.notify
    assert "v1.3.0 (healthy, not a revision number)" in decision.detail


def test_a_current_deploy_without_a_revision_number_cannot_be_rolled_back() -> None:
    facts = history(("7", True), ("v1.4.0", None))
    decision = decide(alert("PodNotReady", service="web", namespace="web"), pack=PACK,
                      state=facts, now=NOW)  # fmt: skip
    assert isinstance(decision, NoAction)
    assert decision.reason is NoActionReason.OUTSIDE_ROLLBACK_WINDOW
    assert "records 'v1.4.0', not a revision number" in decision.detail
    assert "helm rollback" in decision.detail


def test_blue_green_selector_values_need_not_be_numbers() -> None:
    facts = history(("blue", True), ("green", None))
    [switch, *_] = plan_for(
        alert("HighErrorRate", service="payments", namespace="payments"), facts
    ).steps
    assert switch.to_dict()["params"]["to_value"] == "blue"
