"""tests/grammar_table.py is what promtool and amtool say: each case is put to the real
tool again, so the table (and with it remediator's parsers, held to it in the unit
tier) cannot drift from Prometheus and Alertmanager."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.grammar_table import DURATIONS, MATCHERS, Labels

pytestmark = pytest.mark.integration


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (bash tests/env/install-system-deps.sh)")
    return found


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize(("text", "accepted"), DURATIONS)
def test_promtool_agrees(text: str, accepted: bool, tmp_path: Path) -> None:
    rule_file = tmp_path / "rules.yml"
    rule = {"alert": "A", "expr": "vector(1)", "for": text}
    rule_file.write_text(json.dumps({"groups": [{"name": "g", "rules": [rule]}]}))
    result = run(tool("promtool"), "check", "rules", str(rule_file))
    assert (result.returncode == 0) is accepted, result.stdout + result.stderr


def quoted(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


@pytest.mark.parametrize(
    ("line", "accepted", "probes"), MATCHERS, ids=[case[0] for case in MATCHERS]
)
def test_amtool_agrees(
    line: str, accepted: bool, probes: tuple[tuple[Labels, bool], ...], tmp_path: Path
) -> None:
    config = tmp_path / "alertmanager.yml"
    route = {"receiver": "hit", "matchers": [line]}
    document = {
        "route": {"receiver": "miss", "routes": [route]},
        "receivers": [{"name": "miss"}, {"name": "hit"}],
    }
    config.write_text(json.dumps(document))
    checked = run(tool("amtool"), "check-config", str(config))
    assert (checked.returncode == 0) is accepted, checked.stdout + checked.stderr
    for labels, routed in probes:
        pairs = [f"{name}={quoted(value)}" for name, value in labels.items()]
        found = run(tool("amtool"), "config", "routes", "test", f"--config.file={config}", *pairs)
        assert found.returncode == 0, found.stderr
        assert (found.stdout.strip() == "hit") is routed, (labels, found.stdout)
