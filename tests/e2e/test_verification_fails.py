"""A rollback whose verification fails is never reported as a success.

The daemon rolls a bad release back on the kwok cluster; the rollout completes, but the
service's health URL (a small server this test runs) answers 500. The remediation ends
``needs_human`` with what the failed check saw and the evidence gathered on the way,
the record says the health result failed, and people are told on Slack.
"""

from __future__ import annotations

import json
import shutil
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.api_client import ApiClient

from tests.e2e.daemon import RULES, Daemon
from tests.e2e.test_rollback import (
    REVISION,
    _remediations,
    bad_release,
    eventually,
    rollout,
)
from tests.integration.testenv.test_kube_smoke import api, namespace  # fixtures

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
__all__ = ["api", "namespace"]


class _Unhealthy(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"database pool exhausted"
        self.send_response(500)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:  # quiet
        return None


@pytest.fixture
def health_url() -> Iterator[str]:
    """A health endpoint that answers 500, as the service would after a bad migration."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Unhealthy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/healthz"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture
def rules(tmp_path: Path, namespace: str, health_url: str) -> Path:
    directory = tmp_path / "rules"
    directory.mkdir()
    for name in ("defaults.yaml", "remediation.yaml"):
        shutil.copy(RULES / name, directory / name)
    (directory / "catalog.yaml").write_text(
        f"services:\n  checkout:\n    namespace: {namespace}\n    workload: checkout\n"
        f"    rollback: {{strategy: rolling}}\n    health_url: {health_url}\n"
        "    owner: team-checkout\n"
    )
    return directory


@pytest.fixture
def daemon(tmp_path: Path, kube: Any, kafka: Any, slack_api: Any, rules: Path) -> Iterator[Daemon]:
    slack_api.reset()
    topic = f"deployments-{uuid.uuid4().hex[:8]}"
    d = Daemon(
        tmp_path / "daemon",
        rules=rules,
        extra_env={
            "REMEDIATOR_KUBERNETES__KUBECONFIG": kube.endpoints["kubeconfig"],
            "REMEDIATOR_KUBERNETES__INSTANCE_ID": "e2e-daemon",
            "REMEDIATOR_KUBERNETES__ROLLOUT_TIMEOUT_SECONDS": "90",
            # The health URL never recovers: fail after a short grace, not a minute.
            "REMEDIATOR_KUBERNETES__HEALTH_GRACE_SECONDS": "3",
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


def _slack_text(call: Any) -> str:
    blocks = call.args.get("blocks") or ""
    parsed = json.loads(blocks) if isinstance(blocks, str) and blocks else blocks
    return f"{call.args.get('text', '')} {json.dumps(parsed)}"


async def test_a_rollback_whose_health_check_fails_needs_a_human_with_its_evidence(
    api: ApiClient, namespace: str, daemon: Daemon, kafka: Any, slack_api: Any,
    health_url: str,
) -> None:  # fmt: skip
    apps = client.AppsV1Api(api)
    await bad_release(apps, namespace, daemon, kafka)
    done = await eventually(
        lambda: _remediations(daemon),
        lambda items: any(i["status"] in ("succeeded", "failed", "needs_human") for i in items),
        timeout=120, what="the rollback to end",
    )  # fmt: skip
    [rem] = [i for i in done if i["action"] == "rollback"]
    assert rem["status"] == "needs_human", rem
    assert rem["reason"].startswith("verify_health: health check failed"), rem["reason"]

    # The rollback itself landed, once: it is the recovery that is not proven.
    final = await rollout(apps, namespace)
    assert final.metadata.annotations[REVISION] == "3"

    status, detail = daemon.get(f"/api/v1/remediations/{rem['id']}")
    assert status == 200
    steps = [(s["kind"], s["status"]) for s in detail["steps"]]
    assert steps == [
        ("rollout_undo", "succeeded"), ("wait_rollout", "succeeded"), ("verify_health", "failed"),
    ]  # fmt: skip
    failed = detail["steps"][-1]["detail"]
    assert (failed["check"], failed["result"], failed["url"]) == ("health", "failed", health_url)
    assert "500" in failed["error"]
    evidence = failed["evidence"]
    assert isinstance(evidence["events"], list) and evidence["events"], evidence
    assert all(e["name"].startswith("checkout") for e in evidence["events"])
    # The undo's own events (the Deployment scaling its ReplicaSets) are among them.
    assert {"ScalingReplicaSet"} <= {e["reason"] for e in evidence["events"]}

    status, record = daemon.get(f"/api/v1/remediations/{rem['id']}/record?format=json")
    assert status == 200
    assert record["status"] == "needs_human"
    assert record["results"]["health"]["status"] == "failed"
    assert record["results"]["application"]["status"] == "passed"
    assert record["evidence"]["note"] == "recorded when step 3 (verify_health) failed"
    shown = [(e["name"], e["reason"], e["message"]) for e in record["evidence"]["events"]]
    assert shown == [(e["name"], e["reason"], e["message"]) for e in evidence["events"]]
    assert record["owner"] == "team-checkout"

    # Escalation: the people of its notices hear that it needs them.
    def needs_human_told() -> list[Any]:
        calls = slack_api.calls_to("chat.postMessage") + slack_api.calls_to("chat.update")
        return [c for c in calls if rem["id"] in _slack_text(c)
                and ":rotating_light:" in _slack_text(c)]  # fmt: skip

    await eventually(
        lambda: _async(needs_human_told), bool, timeout=30, what="the needs_human notice on Slack"
    )  # fmt: skip
    assert (
        daemon.metric(
            'remediator_remediations_finished_total{action="rollback",status="needs_human"}'
        )
        == 1
    )
    assert daemon.metric('remediator_remediations_finished_total{status="succeeded"}') == 0


async def _async(fn: Any) -> Any:
    import asyncio

    return await asyncio.to_thread(fn)
