"""Issue 16 acceptance: the full story with every peer real (tests/story.py).

A test application's error rate rises; real Prometheus, scraping it with the shipped
alerting rules (windows scaled down), fires HighErrorRate; real Alertmanager delivers it
to the daemon; the daemon rolls the Deployment back on the kwok cluster; the test
restores the error rate when the rollback lands; verification sees the rollout
complete, the health endpoint answer and the condition clear in Prometheus; and the
rollback record of that executed plan is complete, field by field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.story import Narrator, Story

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def test_a_bad_release_is_seen_alerted_rolled_back_and_recovers(
    tmp_path: Path, kube: Any, kafka: Any, prometheus: Any, alertmanager: Any
) -> None:
    lines: list[str] = []
    narrator = Narrator(say=lines.append)
    with Story(tmp_path, kube=kube, kafka=kafka, prometheus=prometheus,
               alertmanager=alertmanager, narrate=narrator) as story:  # fmt: skip
        outcome = story.run()
        daemon = story.daemon
        assert daemon is not None
        rid = outcome.remediation["id"]
        analysis = {"root_cause": "v2 shipped a connection pool of 1",
                    "improvements": ["canary checks the pool size"],
                    "lessons": ["roll back first, debug later"]}  # fmt: skip
        status, edited = daemon.post(f"/api/v1/remediations/{rid}/record", analysis,
                                     method="PATCH")  # fmt: skip
        assert status == 200, edited
        status, record = daemon.get(f"/api/v1/remediations/{rid}/record?format=json")
        assert status == 200, record
        status, markdown = daemon.get(f"/api/v1/remediations/{rid}/record?format=md")
    done = outcome.remediation
    assert done["status"] == "succeeded", done
    assert outcome.signal["kind"] == "HighErrorRate"
    assert outcome.signal["labels"]["service"] == "storefront"
    assert done["rule"] == "high-error-rate-rollback"
    assert [s["kind"] for s in done["steps"]].count("rollout_undo") == 1
    [cleared] = [s for s in done["steps"] if s["kind"] == "verify_condition"]
    assert cleared["status"] == "succeeded"
    assert cleared["detail"]["origin"] == "alert"  # the expression of the alert's generatorURL
    assert cleared["detail"]["prometheus"] == prometheus.url
    assert outcome.image == "registry.example/app:v1"
    check_record(record, rid=rid, analysis=analysis)
    assert status == 200 and "v2 shipped a connection pool of 1" in markdown
    # Every hop was narrated, in order.
    said = "\n".join(lines)
    for hop in ("prometheus: HighErrorRate firing", "alertmanager: delivered",
                "remediator: rule high-error-rate-rollback plans", "is back on",
                f"remediation {done['id']} succeeded"):  # fmt: skip
        assert hop in said, said


def check_record(record: dict[str, Any], *, rid: str, analysis: dict[str, Any]) -> None:
    """Every field of plan 3.11's record, from the plan the daemon really ran."""
    assert (record["remediation_id"], record["service"], record["status"]) == (
        rid, "storefront", "succeeded",
    )  # fmt: skip
    # Versions from -> to: version, revision and image, from the deploy events.
    assert (record["version_from"], record["version_to"]) == ("v2", "v1")
    assert (record["revision_from"], record["revision_to"]) == ("2", "1")
    assert (record["image_from"], record["image_to"]) == (
        "registry.example/app:v2", "registry.example/app:v1",
    )  # fmt: skip
    # Automatic, why (rule and the alert's summary), owner, approvers.
    assert (record["automatic"], record["mode"]) == (True, "automatic")
    assert (record["rule"], record["action"]) == ("high-error-rate-rollback", "rollback")
    assert record["trigger"]["kind"] == "HighErrorRate"
    assert record["trigger"]["summary"].endswith("30% of requests fail with 5xx")
    assert "g0.expr=" in record["trigger"]["generator_url"]
    assert record["owner"] == "team-storefront"
    assert (record["approvers"], record["approved_by"], record["approval"]) == ([], [], None)
    # The timeline: every step, in order, each done.
    assert [(e["step"], e["status"]) for e in record["timeline"]] == [
        ("signal received", "done"), ("decided", "planned"),
        ("rollout_undo", "succeeded"), ("wait_rollout", "succeeded"),
        ("verify_health", "succeeded"), ("verify_condition", "succeeded"),
        ("record_evidence", "succeeded"), ("notify", "succeeded"),
        ("finished", "succeeded"),
    ]  # fmt: skip
    # The five results, from verification (what did not apply says why).
    results = {name: (r["status"], r["detail"]) for name, r in record["results"].items()}
    assert results["application"] == ("passed", 'deployment "app" successfully rolled out')
    assert results["health"][0] == "passed" and results["health"][1].endswith("HTTP 200")
    assert results["performance"][0] == "passed"
    assert results["performance"][1].endswith("returned no series")
    assert results["database"] == ("not_run", "the plan touches no database")
    assert results["function"] == ("not_run", "the catalog names no smoke_test")
    # Impact: duration, pods affected, failed requests counted by Prometheus.
    impact = record["impact"]
    assert 0 < impact["duration_seconds"] < 300
    [pod] = impact["pods_affected"]
    assert pod.startswith("app-")
    failed = int(impact["failed_requests"].split()[0])
    assert failed > 0, impact
    # Evidence: the workload's Kubernetes events during the remediation.
    reasons = {(e["kind"], e["reason"]) for e in record["evidence"]["events"]}
    assert ("Deployment", "ScalingReplicaSet") in reasons
    assert ("Pod", "Scheduled") in reasons
    assert record["evidence"]["helm_history"] == []  # helm did not act
    # The analysis, as edited, with its editor and time.
    assert record["root_cause"] == analysis["root_cause"]
    assert record["improvements"] == analysis["improvements"]
    assert record["lessons"] == analysis["lessons"]
    assert record["analysis_edited_by"] == "e2e-operator"
    assert record["analysis_edited_at"].endswith("Z")
    assert record["links"]["record"].endswith(f"/api/v1/remediations/{rid}/record?format=json")
