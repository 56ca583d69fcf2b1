"""The shipped Prometheus alerting rules pass promtool's checks and unit tests."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from .conftest import RULES_DIR

PROMETHEUS_DIR = RULES_DIR / "prometheus"
ALERT_NAMES = {
    "HealthCheckFailureRate",
    "HighErrorRate",
    "HighLatencyP99",
    "PodNotReady",
    "MemoryPressure",
    "CPUSaturation",
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("promtool")
    if executable is None:
        pytest.fail("promtool is not installed (Debian/Ubuntu: apt-get install prometheus)")
    return subprocess.run(
        [executable, *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_check_rules() -> None:
    files = sorted(str(path) for path in PROMETHEUS_DIR.glob("*.yml"))
    result = promtool("check", "rules", *files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules() -> None:
    tests = sorted(str(path) for path in (PROMETHEUS_DIR / "tests").glob("*.yml"))
    result = promtool("test", "rules", *tests)
    assert result.returncode == 0, result.stdout + result.stderr


def test_exactly_the_contract_alerts_each_with_labels_and_a_test() -> None:
    rules = [
        rule
        for path in PROMETHEUS_DIR.glob("*.yml")
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]
    assert {rule["alert"] for rule in rules} == ALERT_NAMES
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning"}
        assert "namespace, service" in rule["expr"], rule["alert"]
    tested = {
        case["alertname"]
        for path in (PROMETHEUS_DIR / "tests").glob("*.yml")
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test["alert_rule_test"]
    }
    assert tested == ALERT_NAMES


def test_every_alert_has_a_rule_in_the_pack() -> None:
    pack_text = (RULES_DIR / "remediation.yaml").read_text()
    for name in ALERT_NAMES | {"MigrationFailed"}:
        assert f"kinds: [{name}]" in pack_text
