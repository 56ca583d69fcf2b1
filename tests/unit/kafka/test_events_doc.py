"""Every event example in docs/events.md is a valid event `rules explain` accepts."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from remediator.cli import main
from remediator.domain.rules.events import signal_from_cloudevent

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
    return [e for e in examples() if not e["type"].startswith("io.remediator.remediation.")]


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
