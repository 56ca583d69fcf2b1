"""Intake feeds the engine: decisions appear in the API and the CLI of a running daemon."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

from tests.e2e.daemon import Daemon
from tests.e2e.test_alertmanager_intake import post, wait_for
from tests.unit.payloads import alert, payload

pytestmark = pytest.mark.e2e


def remediations(daemon: Daemon, query: str = "") -> list[dict[str, object]]:
    status, page = daemon.get(f"/api/v1/remediations?limit=1000{query}")
    assert status == 200, page
    return list(page["items"])


def test_without_a_cluster_plans_are_dry_runs_and_readyz_says_why(daemon: Daemon) -> None:
    status, body = daemon.get("/readyz", auth=False)
    assert status == 200
    assert body["checks"]["kubernetes"].startswith("unreachable")
    assert "dry runs" in body["checks"]["kubernetes"]
    assert "plans are recorded as dry runs" in daemon.log_path.read_text()


def test_each_signal_is_decided_and_explained(daemon: Daemon) -> None:
    alerts = [
        alert(name="HighErrorRate", fingerprint=f"e{i}", extra_labels={"pod": f"p{i}"})
        for i in range(20)
    ]
    alerts.append(alert(name="Watchdog", fingerprint="wd"))
    status, body = post(daemon, orjson.dumps(payload(alerts)))
    assert status == 200 and body["accepted"] == 21

    wait_for(lambda: len(remediations(daemon)) == 20, timeout=30, what="20 decisions")
    items = remediations(daemon, "&service=checkout&status=skipped")
    assert len(items) == 20
    # No deploy history yet, so there is no healthy revision to roll back to.
    assert {i["reason"] for i in items} == {"outside_rollback_window"}
    assert {i["rule"] for i in items} == {"high-error-rate-rollback"}
    assert (
        daemon.metric(
            'remediator_decisions_total{outcome="no_action",reason="outside_rollback_window"}'
        )
        == 20
    )
    assert daemon.metric('remediator_decisions_total{outcome="no_action",reason="no_rule"}') == 1
    # Every decision's wait since receipt is observed once.
    assert daemon.metric("remediator_decision_latency_seconds_count") == 21

    status, detail = daemon.get(f"/api/v1/remediations/{items[0]['id']}")
    assert status == 200
    assert detail["decision"]["reason"] == "outside_rollback_window"
    assert detail["explanation"].startswith("no action (outside_rollback_window)")

    for fmt, fragment in (("md", "# "), ("html", "<html"), ("json", '"remediation_id"')):
        request = f"/api/v1/remediations/{items[0]['id']}/record?format={fmt}"
        status, text = daemon.get(request)
        assert status == 200
        body = text if isinstance(text, str) else orjson.dumps(text).decode()
        assert fragment in body
        assert "checkout" in body and "HighErrorRate" in body

    env = {"PATH": "/usr/bin:/bin"}
    cli = [sys.executable, "-m", "remediator"]
    out = subprocess.run(
        [*cli, "remediations", "--json", "--limit", "100", "--journal", f"sqlite:///{daemon.journal}"],
        capture_output=True, text=True, check=True, env=env,
    )  # fmt: skip
    assert len(out.stdout.splitlines()) == 20
    shown = subprocess.run(
        [*cli, "remediations", str(items[0]["id"]), "--journal", f"sqlite:///{daemon.journal}"],
        capture_output=True, text=True, check=True, env=env,
    )  # fmt: skip
    assert "outside_rollback_window" in shown.stdout
    report = subprocess.run(
        [*cli, "report", str(items[0]["id"]), "--journal", f"sqlite:///{daemon.journal}"],
        capture_output=True, text=True, check=True, env=env,
    )  # fmt: skip
    assert "to be filled in" in report.stdout and "HighErrorRate" in report.stdout
    circuit = subprocess.run(
        [*cli, "circuit", "status", "--journal", f"sqlite:///{daemon.journal}"],
        capture_output=True, text=True, check=True, env=env,
    )  # fmt: skip
    assert "closed" in circuit.stdout
