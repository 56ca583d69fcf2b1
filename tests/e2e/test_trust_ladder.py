"""Issue 15, the trust ladder end to end: the daemon on a real control plane (kwok),
with the bad release of test_rollback (v2 never Ready, both deploys reported on Kafka,
then a PodNotReady alert), and checkout's automation level set in the catalog.

- notify: the release is NOT rolled back; people are told what would have run;
- approve: the rollback waits in awaiting_approval, and runs once approved;
- both: GET /api/v1/services (and ``remediator services``) show the level, what set
  it, and the outcome.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.api_client import ApiClient

from tests.e2e.daemon import RULES, Daemon
from tests.e2e.test_rollback import (
    REVISION,
    _remediations,
    assert_rolled_back_once,
    bad_release,
    complete,
    rollout,
)
from tests.integration.testenv.test_kube_smoke import (  # fixtures: api, namespace
    api,
    eventually,
    namespace,
)

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
__all__ = ["api", "namespace"]

FINAL = ("succeeded", "failed", "needs_human", "skipped")


def ladder_rules(directory: Path, namespace: str, level: str) -> Path:
    """The shipped rules, with checkout in this test's namespace at ``level``."""
    directory.mkdir()
    for name in ("defaults.yaml", "remediation.yaml"):
        shutil.copy(RULES / name, directory / name)
    (directory / "catalog.yaml").write_text(
        f"services:\n  checkout:\n    namespace: {namespace}\n    workload: checkout\n"
        "    rollback: {strategy: rolling}\n    scale: {min_replicas: 2, max_replicas: 6}\n"
        f"    approvers: [tech-lead]\n    automation: {level}\n"
    )
    return directory


@pytest.fixture
def daemon(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    kube: Any,
    kafka: Any,
    slack_api: Any,
    namespace: str,
) -> Iterator[Daemon]:
    level = request.param
    topic = f"deployments-{uuid.uuid4().hex[:8]}"
    slack_api.reset()
    d = Daemon(
        tmp_path / "daemon",
        rules=ladder_rules(tmp_path / "rules", namespace, level),
        extra_env={
            "REMEDIATOR_KUBERNETES__KUBECONFIG": kube.endpoints["kubeconfig"],
            "REMEDIATOR_KUBERNETES__INSTANCE_ID": "e2e-ladder",
            "REMEDIATOR_KUBERNETES__ROLLOUT_TIMEOUT_SECONDS": "90",
            "REMEDIATOR_KAFKA__BOOTSTRAP_SERVERS": kafka.endpoints["kafka_bootstrap"],
            "REMEDIATOR_KAFKA__DEPLOY_TOPICS": topic,
            "REMEDIATOR_KAFKA__GROUP_ID": f"g-{topic}",
            "REMEDIATOR_SLACK__TOKEN": slack_api.endpoints["slack_token"],
            "REMEDIATOR_SLACK__BASE_URL": slack_api.endpoints["slack_api_url"],
            "REMEDIATOR_SLACK__DEFAULT_CHANNEL": "#alerts",
        },
    )
    d.topic = topic  # type: ignore[attr-defined]
    d.start()
    yield d
    if d.proc is not None:
        assert d.stop() == 0
    slack_api.reset()


def services(daemon: Daemon) -> dict[str, Any]:
    status, body = daemon.get("/api/v1/services")
    assert status == 200, body
    return {item["service"]: item for item in body["items"]}


def approve(daemon: Daemon, remediation_id: str) -> tuple[int, Any]:
    request = urllib.request.Request(  # noqa: S310 - loopback http
        f"{daemon.url}/api/v1/remediations/{remediation_id}/approve",
        data=orjson.dumps({"comment": "e2e: checked"}),
        method="POST",
        headers={"Authorization": f"Bearer {daemon.operator_token}",
                 "Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def services_command(daemon: Daemon, tmp_path: Path) -> str:
    token_file = tmp_path / "operator-token"
    token_file.write_text(daemon.operator_token)
    done = subprocess.run(
        [sys.executable, "-m", "remediator", "services", "--url", daemon.url,
         "--token-file", str(token_file)],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    return done.stdout


@pytest.mark.parametrize("daemon", ["notify"], indirect=True)
async def test_a_notify_service_is_told_not_rolled_back(
    api: ApiClient, namespace: str, daemon: Daemon, kafka: Any, slack_api: Any, tmp_path: Path
) -> None:
    apps = client.AppsV1Api(api)
    v2 = await bad_release(apps, namespace, daemon, kafka)
    decided = await eventually(
        lambda: _remediations(daemon),
        lambda items: any(i["status"] in FINAL for i in items),
        timeout=120, what="the alert's decision",
    )  # fmt: skip
    [rem] = decided
    assert (rem["action"], rem["status"], rem["reason"]) == (
        "rollback",
        "skipped",
        "automation_notify",
    )
    # People hear of it, with what would have run.
    [call] = await asyncio.to_thread(slack_api.wait_for_calls, "chat.postMessage", 1, 60)
    blocks = call.args["blocks"]
    text = json.dumps(json.loads(blocks) if isinstance(blocks, str) else blocks)
    assert "checkout" in text and "Notify only" in text
    assert "would have run" in text and "rollout_undo" in text
    # Nothing was touched: v2 is still there, unrolled.
    _, detail = daemon.get(f"/api/v1/remediations/{rem['id']}")
    assert detail["steps"] == [] and detail["claimed_by"] is None
    after = await rollout(apps, namespace)
    assert after.metadata.annotations[REVISION] == "2"
    assert after.metadata.generation == v2.metadata.generation
    assert after.spec.template == v2.spec.template
    assert after.spec.template.spec.containers[0].image == "registry.example/checkout:v2"
    assert daemon.metric("remediator_remediations_finished_total") == 0
    assert (
        daemon.metric('remediator_decisions_total{outcome="no_action",reason="automation_notify"}')
        == 1
    )

    checkout = services(daemon)["checkout"]
    assert checkout["automation"] == "notify"
    change = checkout["automation_changed"]
    assert (change["from"], change["to"]) == (None, "notify")
    assert change["by"].startswith(f"rules {daemon.rules} (sha256:")
    assert checkout["last_30_days"]["would_have_run"] == 1
    assert checkout["last_30_days"]["plans"] == 0
    row = next(line for line in services_command(daemon, tmp_path).splitlines()
               if line.startswith("checkout"))  # fmt: skip
    assert row.split()[2:8] == ["notify", "0", "0", "0", "0", "1"]


@pytest.mark.parametrize("daemon", ["approve"], indirect=True)
async def test_an_approve_service_waits_for_approval_then_rolls_back(
    api: ApiClient, namespace: str, daemon: Daemon, kafka: Any, tmp_path: Path
) -> None:
    apps = client.AppsV1Api(api)
    v2 = await bad_release(apps, namespace, daemon, kafka)
    waiting = await eventually(
        lambda: _remediations(daemon),
        lambda items: any(i["status"] == "awaiting_approval" for i in items),
        timeout=120, what="the plan to wait for approval",
    )  # fmt: skip
    [rem] = waiting
    assert rem["action"] == "rollback"
    _, detail = daemon.get(f"/api/v1/remediations/{rem['id']}")
    assert detail["decision"]["require_approval"] is True
    assert detail["decision"]["approvers"] == ["tech-lead"]
    assert "automation level approve" in detail["explanation"]
    assert detail["steps"] == [] and detail["claimed_by"] is None
    assert (await rollout(apps, namespace)).metadata.generation == v2.metadata.generation
    assert services(daemon)["checkout"]["last_30_days"]["plans"] == 1

    status, approved = approve(daemon, rem["id"])
    assert status == 200, approved
    done = await eventually(
        lambda: _remediations(daemon),
        lambda items: any(i["status"] in FINAL for i in items),
        timeout=120, what="the approved rollback to finish",
    )  # fmt: skip
    [finished] = done
    assert finished["status"] == "succeeded", finished
    await assert_rolled_back_once(apps, namespace)
    assert complete(await rollout(apps, namespace))

    checkout = services(daemon)["checkout"]
    assert checkout["automation"] == "approve"
    assert checkout["last_30_days"]["plans"] == 1
    assert checkout["last_30_days"]["succeeded"] == 1
    assert checkout["last_30_days"]["median_seconds_to_recover"] > 0
    row = next(line for line in services_command(daemon, tmp_path).splitlines()
               if line.startswith("checkout"))  # fmt: skip
    assert row.split()[2:4] == ["approve", "1"]
