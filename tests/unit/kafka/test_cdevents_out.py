"""Every CDEvent remediator publishes follows the CDEvents v0.4.1 schema of its type and
the CDEvents CloudEvents binding (tests/data/cdevents-v0.4.1), and the incident and
rollback events tell the story of a remediation: detected when it starts, rolled back
and resolved when it succeeds, never resolved when it fails."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from remediator.domain.errors import PermanentError
from remediator.domain.outcomes import CDEventType, rollback_target, rolledback_cdevent
from remediator.domain.plans import ActionKind, Plan, Step, StepKind
from remediator.domain.rules import RulePack
from remediator.domain.steps import (
    HelmRollbackParams,
    HelmRollbackStep,
    ScaleDeploymentParams,
    ScaleDeploymentStep,
    SwitchSelectorParams,
    SwitchSelectorStep,
)
from remediator.journal.sqlite import SqliteJournal
from tests.cdevents import binding_errors, conformance_example, schema_errors
from tests.unit.engine.test_executor import FakeRunner, executor, planned_rollback
from tests.unit.journal_helpers import outbox_messages

CHANNEL = "kafka:remediator.outcomes"
AT = datetime(2026, 11, 27, 9, 12, 3, 512000, tzinfo=UTC)

pytest_plugins = ["tests.unit.engine.test_executor"]  # its journal and pack fixtures


async def published(journal: SqliteJournal) -> list[dict[str, Any]]:
    return [p.message.payload for p in await outbox_messages(journal, CHANNEL, limit=50)]


def cdevents(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"].startswith("dev.cdevents.")]


def test_the_schemas_accept_the_conformance_examples_and_refuse_the_old_rolledback() -> None:
    """The checker itself: it passes what CDEvents says is valid and fails what was wrong."""
    for name in ("service_rolledback", "incident_detected", "incident_resolved"):
        assert schema_errors(conformance_example(name)) == []
    old = rolledback_cdevent(remediation_id="rem_1", service="checkout", namespace="shop",
                             to_revision="7", at=AT)  # fmt: skip
    old["data"]["subject"]["content"] = {"environment": {"id": ""}}  # what 0.1 published
    del old["subject"]
    errors = binding_errors(old)
    assert any("artifactId" in e for e in errors), errors
    assert any(e.startswith("subject/content/environment/id") for e in errors), errors
    assert any(e.startswith("CloudEvents subject") for e in errors), errors


@pytest.mark.parametrize("to_revision", ["7", "sha256:0b31b1c0", None])
def test_rolledback_follows_schema_and_binding(to_revision: str | None) -> None:
    event = rolledback_cdevent(remediation_id="rem_1", service="checkout", namespace="shop",
                               to_revision=to_revision, at=AT)  # fmt: skip
    assert binding_errors(event) == []
    content = event["data"]["subject"]["content"]
    assert content["environment"] == {"id": "shop"}
    expected = "pkg:generic/checkout" + (f"@{to_revision}" if to_revision else "")
    assert content["artifactId"] == expected
    assert event["subject"] == "checkout"


@pytest.mark.parametrize(
    ("step", "target"),
    [
        (HelmRollbackStep(params=HelmRollbackParams(namespace="shop", release="checkout",
                                                    from_revision=5, to_revision=4),
                          reason="r"), "4"),
        (SwitchSelectorStep(params=SwitchSelectorParams(namespace="shop", service_name="checkout",
                                                        selector_label="colour",
                                                        from_value="green", to_value="blue"),
                            reason="r"), "blue"),
        (ScaleDeploymentStep(params=ScaleDeploymentParams(namespace="shop",
                                                          deployment="checkout-canary",
                                                          replicas=0),
                             reason="r"), None),
    ],
)  # fmt: skip
def test_the_rollback_target_is_what_each_strategy_returns_to(
    step: Step, target: str | None
) -> None:
    plan = Plan(service="checkout", namespace="shop", rule="r", steps=(step,),
                requested_action=ActionKind.ROLLBACK, action=ActionKind.ROLLBACK)  # fmt: skip
    assert rollback_target(plan) == target


async def test_a_succeeded_rollback_publishes_valid_incident_and_rollback_cdevents(
    journal: SqliteJournal, pack: RulePack
) -> None:
    rid = await planned_rollback(journal, pack)
    await executor(journal, FakeRunner()).run_until_idle()
    events = cdevents(await published(journal))
    assert [e["type"] for e in events] == [
        CDEventType.INCIDENT_DETECTED, CDEventType.SERVICE_ROLLEDBACK,
        CDEventType.INCIDENT_RESOLVED,
    ]  # fmt: skip
    for event in events:
        assert binding_errors(event) == [], event["type"]
        assert event["data"]["context"]["chainId"] == rid
    detected, rolledback, resolved = events
    # One incident, opened and closed: consumers pair the two by subject.
    assert detected["subject"] == resolved["subject"] == f"incident/{rid}"
    assert detected["data"]["subject"]["content"]["service"] == {"id": "checkout"}
    assert detected["data"]["subject"]["content"]["environment"]["id"] == "shop"
    # planned_rollback: revision 2 is failing, 1 is the healthy one rolled back to.
    assert rolledback["data"]["subject"]["content"]["artifactId"] == "pkg:generic/checkout@1"
    assert len({e["id"] for e in events}) == 3


async def test_a_failed_remediation_detects_an_incident_and_never_resolves_it(
    journal: SqliteJournal, pack: RulePack
) -> None:
    await planned_rollback(journal, pack)
    runner = FakeRunner(failures={StepKind.WAIT_ROLLOUT: [PermanentError("deadline exceeded")]})
    await executor(journal, runner).run_until_idle()
    events = cdevents(await published(journal))
    assert [e["type"] for e in events] == [CDEventType.INCIDENT_DETECTED]
    assert binding_errors(events[0]) == []


def test_tests_data_keeps_its_license() -> None:
    data = Path(__file__).resolve().parents[2] / "data" / "cdevents-v0.4.1"
    assert "Apache License" in (data / "LICENSE").read_text()
