"""The automation level per service (the trust ladder): notify, approve, auto.

Set in the catalog (default: ``defaults.automation``, itself ``auto``), validated on
load, honoured by the decision for automatic plans only.
"""

from __future__ import annotations

import argparse
from datetime import timedelta
from pathlib import Path

import pytest

from remediator.cli import rules as cli_rules
from remediator.domain.automation import AutomationLevel
from remediator.domain.lifecycle import Remediation, RemediationStatus
from remediator.domain.plans import ActionKind, NoAction, NoActionReason, Plan, explain
from remediator.domain.record import status_note
from remediator.domain.record_build import record_from_journal
from remediator.domain.rules import (
    CircuitState,
    DeployRecord,
    PastOutcome,
    RemediationRecord,
    RulePack,
    ServiceState,
    check_rule_pack,
    decide,
    load_rule_pack,
)
from remediator.domain.signals import Signal
from remediator.rulefiles import load_rule_pack_and_origin, read_rule_files, rules_digest

from .conftest import NOW, alert, event, manual

L = AutomationLevel
ALERT_START = NOW - timedelta(minutes=10)
DEPLOYS = (
    DeployRecord(revision="7", version="v1.3.0", finished_at=NOW - timedelta(days=1), healthy=True),
    DeployRecord(
        revision="8",
        version="v1.4.0",
        finished_at=ALERT_START - timedelta(minutes=20),
        previous_revision="7",
    ),
)
STATE = ServiceState(current_replicas=4, deploys=DEPLOYS)
RULES = """\
rules:
  - name: errors
    match: {source: alertmanager, kinds: [HighErrorRate]}
    action: rollback
  - name: errors-by-the-book
    match: {source: alertmanager, kinds: [HighLatencyP99]}
    action: rollback
    approvers: [sre]
  - name: deploy-failed
    match: {source: kafka, kinds: [deployment.failed]}
    action: notify_only
  - name: migration-failed
    match: {source: kafka, kinds: [migration.failed]}
    action: revert_migration
  - name: manual-rollback
    match: {source: manual, kinds: [rollback]}
    action: rollback
    require_approval: true
    approvers: [tech-lead]
"""


def catalog(level: str | None, *, approvers: str = "", database: bool = False) -> str:
    text = (
        "services:\n  checkout:\n    namespace: shop\n    workload: checkout\n"
        "    rollback: {strategy: rolling}\n"
    )
    if level is not None:
        text += f"    automation: {level}\n"
    if approvers:
        text += f"    approvers: [{approvers}]\n"
    if database:
        text += "    database: {engine: postgres, dsn_secret: checkout-db}\n"
    return text


def pack_with(
    level: str | None, defaults: str = "", *, approvers: str = "", database: bool = False
) -> RulePack:
    files = {
        "catalog.yaml": catalog(level, approvers=approvers, database=database),
        "rules.yaml": RULES,
    }
    if defaults:
        files["defaults.yaml"] = defaults
    return load_rule_pack(files)


def decided(pack: RulePack, signal: Signal, state: ServiceState = STATE) -> Plan | NoAction:
    return decide(signal, pack=pack, state=state, now=NOW)


# --- the catalog field ------------------------------------------------------------------


def test_auto_is_the_default_so_packs_without_levels_act_as_before() -> None:
    pack = pack_with(None)
    assert pack.services["checkout"].automation is None
    assert pack.automation("checkout") is L.AUTO
    plan = decided(pack, alert("HighErrorRate"))
    assert isinstance(plan, Plan) and not plan.require_approval


def test_a_service_level_beats_the_pack_default() -> None:
    notifying = "defaults: {automation: notify}\n"
    assert pack_with(None, notifying).automation("checkout") is L.NOTIFY
    assert pack_with("auto", notifying).automation("checkout") is L.AUTO
    assert pack_with("approve").automation("checkout") is L.APPROVE
    assert pack_with("auto").automation("not-in-catalog") is L.AUTO


@pytest.mark.parametrize(
    ("files", "problem"),
    [
        (
            {"catalog.yaml": catalog("yolo")},
            "catalog.yaml:6: services.checkout.automation: 'yolo' is not an automation level "
            "(one of notify, approve, auto)",
        ),
        (
            {"catalog.yaml": catalog(None), "defaults.yaml": "defaults: {automation: Auto}\n"},
            "defaults.yaml:1: defaults.automation: 'Auto' is not an automation level "
            "(one of notify, approve, auto)",
        ),
        (
            {"catalog.yaml": catalog("[notify]")},
            "catalog.yaml:6: services.checkout.automation: expected one of notify, approve, "
            "auto, got list ['notify']",
        ),
        (
            {"catalog.yaml": catalog("true")},
            "catalog.yaml:6: services.checkout.automation: expected one of notify, approve, "
            "auto, got bool True",
        ),
    ],
)
def test_a_bad_level_is_named_with_file_line_and_field(files: dict[str, str], problem: str) -> None:
    _, problems = check_rule_pack(files)
    assert [str(p) for p in problems] == [problem]


def test_rules_check_names_the_bad_value(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "catalog.yaml").write_text(catalog("autopilot"))
    parser = argparse.ArgumentParser(prog="remediator")
    cli_rules.register(parser.add_subparsers(required=True))
    args = parser.parse_args(["rules", "check", str(tmp_path)])
    assert args.func(args) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0] == (
        f"{tmp_path}/catalog.yaml:6: services.checkout.automation: 'autopilot' is not an "
        "automation level (one of notify, approve, auto)"
    )


# --- the decision honours each level -----------------------------------------------------


def test_auto_acts() -> None:
    plan = decided(pack_with("auto"), alert("HighErrorRate"))
    assert isinstance(plan, Plan)
    assert (plan.action, plan.require_approval) == (ActionKind.ROLLBACK, False)


def test_notify_decides_and_tells_but_never_acts() -> None:
    decision = decided(pack_with("notify"), alert("HighErrorRate"))
    assert isinstance(decision, NoAction)
    assert decision.reason is NoActionReason.AUTOMATION_NOTIFY
    assert decision.notify  # people hear of it
    assert "automation level notify" in decision.detail
    # What would have run is attached, and explained to whoever reads the notice.
    assert decision.plan is not None
    assert decision.plan.action is ActionKind.ROLLBACK
    assert decision.plan.steps[0].params.model_dump()["to_revision"] == 7
    text = explain(decision)
    assert text.startswith("no action (automation_notify)")
    assert "would have run:" in text and "rollout_undo" in text


def test_approve_makes_every_automatic_plan_wait_for_the_rules_approvers() -> None:
    pack = pack_with("approve", approvers="tech-lead")
    plan = decided(pack, alert("HighErrorRate"))
    assert isinstance(plan, Plan)
    assert plan.require_approval
    assert plan.approvers == ("tech-lead",)  # the service's: the rule names none
    assert "automation level approve" in plan.explanation
    by_the_book = decided(pack, alert("HighLatencyP99"))
    assert isinstance(by_the_book, Plan)
    assert (by_the_book.require_approval, by_the_book.approvers) == (True, ("sre",))


def test_approve_falls_back_to_the_pack_default_approvers() -> None:
    pack = pack_with("approve", "defaults: {approvers: [on-call]}\n")
    plan = decided(pack, alert("HighErrorRate"))
    assert isinstance(plan, Plan)
    assert (plan.require_approval, plan.approvers) == (True, ("on-call",))
    assert pack_with("approve").defaults.approvers == ()


def test_kafka_events_are_automatic_too() -> None:
    pack = pack_with("approve", database=True)
    plan = decided(pack, event("migration.failed", migration="042_add_index"))
    assert isinstance(plan, Plan)
    assert (plan.action, plan.require_approval) == (ActionKind.REVERT_MIGRATION, True)
    held = decided(pack_with("notify", database=True), event("migration.failed", migration="x"))
    assert isinstance(held, NoAction) and held.reason is NoActionReason.AUTOMATION_NOTIFY


@pytest.mark.parametrize("level", ["notify", "approve", "auto"])
def test_people_asking_are_not_bound_by_the_level(level: str) -> None:
    # A manual request already waits for its rule's approvers: the ladder is about what
    # remediator does on its own.
    plan = decided(pack_with(level), manual("rollback", scenario="user_experience"))
    assert isinstance(plan, Plan)
    assert (plan.require_approval, plan.approvers) == (True, ("tech-lead",))
    assert "automation level" not in plan.explanation


@pytest.mark.parametrize("level", ["notify", "approve"])
def test_notify_only_plans_only_tell_and_need_nobody(level: str) -> None:
    plan = decided(pack_with(level), event("deployment.failed"))
    assert isinstance(plan, Plan)
    assert (plan.action, plan.require_approval) == (ActionKind.NOTIFY_ONLY, False)


def test_safety_checks_before_the_level_still_apply() -> None:
    open_one = RemediationRecord(
        action=ActionKind.ROLLBACK, started_at=NOW - timedelta(minutes=5), status=PastOutcome.OPEN
    )
    busy = STATE.model_copy(update={"remediations": (open_one,)})
    in_progress = decided(pack_with("notify"), alert("HighErrorRate"), busy)
    assert isinstance(in_progress, NoAction) and in_progress.reason is NoActionReason.IN_PROGRESS
    tripped = STATE.model_copy(update={"circuit": CircuitState(open=True)})
    circuit = decided(pack_with("approve"), alert("HighErrorRate"), tripped)
    assert isinstance(circuit, NoAction) and circuit.reason is NoActionReason.CIRCUIT_OPEN
    no_history = STATE.model_copy(update={"deploys": ()})
    nothing = decided(pack_with("notify"), alert("HighErrorRate"), no_history)
    assert isinstance(nothing, NoAction)
    assert nothing.reason is NoActionReason.OUTSIDE_ROLLBACK_WINDOW


def test_an_approve_plan_in_cooldown_is_still_held() -> None:
    done = RemediationRecord(
        action=ActionKind.ROLLBACK,
        started_at=NOW - timedelta(minutes=5),
        status=PastOutcome.SUCCEEDED,
    )
    recent = STATE.model_copy(update={"remediations": (done,)})
    held = decided(pack_with("approve"), alert("HighErrorRate"), recent)
    assert isinstance(held, NoAction) and held.reason is NoActionReason.COOLDOWN
    assert held.plan is not None and held.plan.require_approval


def test_the_record_says_why_nothing_ran() -> None:
    decision = decided(pack_with("notify"), alert("HighErrorRate"))
    remediation = Remediation(
        id="rem_1", signal_id="sig_1", service="checkout", namespace="shop", rule="errors",
        action=ActionKind.ROLLBACK, status=RemediationStatus.SKIPPED,
        reason=NoActionReason.AUTOMATION_NOTIFY.value, manual=False, automated=True,
        created_at=NOW, updated_at=NOW, explanation=explain(decision),
        decision=decision.to_dict(), steps=(),
    )  # fmt: skip
    record = record_from_journal(remediation, None)
    note = status_note(record)
    assert note is not None and note.startswith("Notify only:")
    assert record.revision_to == "7"  # what would have run, for the notice


# --- what a level change is recorded as made by ------------------------------------------


def test_the_origin_names_the_path_and_a_digest_of_the_files(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    for directory in (first, second):
        directory.mkdir()
        (directory / "catalog.yaml").write_text(catalog("notify"))
        (directory / "rules.yaml").write_text(RULES)
    pack, origin = load_rule_pack_and_origin(first)
    assert pack.automation("checkout") is L.NOTIFY
    digest = rules_digest(read_rule_files(first))
    assert origin == f"rules {first} (sha256:{digest[:12]})"
    # The same files elsewhere are the same pack; one changed level is another.
    assert rules_digest(read_rule_files(second)) == digest
    (second / "catalog.yaml").write_text(catalog("approve"))
    _, promoted = load_rule_pack_and_origin(second)
    assert promoted.startswith(f"rules {second} (sha256:")
    assert promoted.removeprefix(f"rules {second}") != origin.removeprefix(f"rules {first}")
