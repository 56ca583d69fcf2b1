"""Every event example in docs/events.md is right: the incoming ones are events `rules
explain` accepts, every CDEvents one (in or out) follows its CDEvents v0.4.1 schema and
the CDEvents CloudEvents binding, and the outgoing CDEvents are what remediator builds."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from remediator.cli import main
from remediator.domain.lifecycle import Remediation, RemediationStatus
from remediator.domain.outcomes import EVENT_SOURCE, incident_cdevent, rolledback_cdevent
from remediator.domain.plans import ActionKind
from remediator.domain.rules.events import signal_from_cloudevent
from tests.cdevents import binding_errors

REPO = Path(__file__).resolve().parents[3]
DOC = REPO / "docs" / "events.md"
BLOCK = re.compile(r"```json\n(.*?)```", re.DOTALL)
LINE = re.compile(r"(?:echo '|^>)[a-z]+\|(\{.*\})'?", re.MULTILINE)


def examples() -> list[dict[str, Any]]:
    text = DOC.read_text()
    events = [json.loads(block) for block in BLOCK.findall(text)]
    events += [json.loads(line) for line in LINE.findall(text)]
    return events


def incoming() -> list[dict[str, Any]]:
    return [e for e in examples() if e["source"] != EVENT_SOURCE]


def cdevents() -> list[dict[str, Any]]:
    return [e for e in examples() if e["type"].startswith("dev.cdevents.")]


def outgoing_cdevents() -> dict[str, dict[str, Any]]:
    return {e["id"]: e for e in cdevents() if e["source"] == EVENT_SOURCE}


def test_the_documented_types_all_have_an_example() -> None:
    types = {e["type"].rsplit(".0.", 1)[0] for e in incoming()}
    assert types == {
        *(f"io.remediator.deployment.{s}" for s in ("started", "succeeded", "failed")),
        *(f"io.remediator.migration.{s}" for s in ("started", "applied", "failed")),
        *(f"dev.cdevents.service.{s}" for s in ("deployed", "upgraded", "rolledback", "removed")),
    }
    assert len(LINE.findall(DOC.read_text())) == 2  # the kcat and console-producer lines


@pytest.mark.parametrize("event", incoming(), ids=lambda e: str(e["id"]))
def test_rules_explain_accepts_the_example(
    event: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event))
    code = main(["rules", "explain", "--rules", str(REPO / "rules"), "--event", str(path),
                 "--now", "2026-11-27T09:30:00Z"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    signal = signal_from_cloudevent(event, received_at=datetime(2026, 11, 27, 9, 30, tzinfo=UTC))
    assert f"signal: kafka {signal.kind} (event) service=checkout namespace=shop" in out


def test_the_cdevents_examples_are_the_four_in_and_the_two_out() -> None:
    assert len([e for e in cdevents() if e["source"] != EVENT_SOURCE]) == 4
    assert sorted(outgoing_cdevents()) == [
        "rem_4f1c2a9b0d3e5f6a7b8c:incident.detected",
        "rem_4f1c2a9b0d3e5f6a7b8c:rolledback",
    ]


@pytest.mark.parametrize("event", cdevents(), ids=lambda e: str(e["type"]))
def test_the_cdevents_example_follows_the_schema_and_the_binding(event: dict[str, Any]) -> None:
    assert binding_errors(event) == []


def test_the_outgoing_cdevents_examples_are_what_remediator_publishes() -> None:
    shown = outgoing_cdevents()
    rolledback = shown["rem_4f1c2a9b0d3e5f6a7b8c:rolledback"]
    detected = shown["rem_4f1c2a9b0d3e5f6a7b8c:incident.detected"]
    at = datetime.fromisoformat(rolledback["time"])
    assert rolledback == rolledback_cdevent(
        remediation_id="rem_4f1c2a9b0d3e5f6a7b8c", service="checkout", namespace="shop",
        to_revision="7", at=at,
    )  # fmt: skip
    remediation = Remediation(
        id="rem_4f1c2a9b0d3e5f6a7b8c", signal_id="sig_9d2e61f0a4c3b8e7d5a1",
        service="checkout", namespace="shop", rule="high-error-rate-rollback",
        action=ActionKind.ROLLBACK, status=RemediationStatus.RUNNING, reason=None,
        manual=False, automated=True, created_at=at, updated_at=at, explanation="",
    )  # fmt: skip
    assert detected == incident_cdevent(
        remediation, resolved=False, namespace="shop", at=datetime.fromisoformat(detected["time"])
    )
