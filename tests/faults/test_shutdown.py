"""SIGTERM while a plan is in the middle of a long step: draining starts at once, the
daemon exits within its one shutdown budget, and the plan resumes after the restart.

The plan is a real rollback on the kwok cluster whose last step, the health check,
hangs (the service's health URL answers nothing), as a slow verification would.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.api_client import ApiClient

from tests.e2e.daemon import RULES, Daemon
from tests.e2e.test_alertmanager_intake import post
from tests.e2e.test_rollback import _remediations, assert_rolled_back_once, bad_release
from tests.faults.conftest import HealthEndpoint
from tests.polling import eventually
from tests.unit.payloads import alert, payload

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

BUDGET_SECONDS = 8.0
# Process start-up of the interpreter is not part of the drain; exit must follow the
# budget closely, far below Kubernetes' 30 s grace period.
EXIT_SLACK_SECONDS = 4.0


def rules_with_health(tmp_path: Path, namespace: str, health_url: str) -> Path:
    directory = tmp_path / "rules"
    directory.mkdir()
    for name in ("defaults.yaml", "remediation.yaml"):
        shutil.copy(RULES / name, directory / name)
    (directory / "catalog.yaml").write_text(
        f"services:\n  checkout:\n    namespace: {namespace}\n    workload: checkout\n"
        f"    health_url: {health_url}\n    rollback: {{strategy: rolling}}\n"
    )
    return directory


def plan_steps(daemon: Daemon, rid: str) -> list[dict[str, Any]]:
    status, detail = daemon.get(f"/api/v1/remediations/{rid}")
    assert status == 200, detail
    return list(detail["steps"])


async def test_sigterm_mid_step_drains_in_order_within_the_budget_and_resumes(
    api: ApiClient,
    namespace: str,
    kube: Any,
    kafka: Any,
    tmp_path: Path,
    health_endpoint: HealthEndpoint,
) -> None:
    topic = f"deployments-{uuid.uuid4().hex[:8]}"
    daemon = Daemon(
        tmp_path / "daemon",
        rules=rules_with_health(tmp_path, namespace, health_endpoint.url),
        extra_env={
            "REMEDIATOR_KUBERNETES__KUBECONFIG": kube.endpoints["kubeconfig"],
            "REMEDIATOR_KUBERNETES__INSTANCE_ID": "faults-daemon",
            "REMEDIATOR_KUBERNETES__ROLLOUT_TIMEOUT_SECONDS": "90",
            "REMEDIATOR_KUBERNETES__HEALTH_TIMEOUT_SECONDS": "600",
            "REMEDIATOR_KAFKA__BOOTSTRAP_SERVERS": kafka.endpoints["kafka_bootstrap"],
            "REMEDIATOR_KAFKA__DEPLOY_TOPICS": topic,
            "REMEDIATOR_KAFKA__GROUP_ID": f"g-{topic}",
            "REMEDIATOR_SHUTDOWN__TIMEOUT_SECONDS": str(BUDGET_SECONDS),
        },
    )
    daemon.topic = topic  # type: ignore[attr-defined]
    daemon.start()
    try:
        apps = client.AppsV1Api(api)
        await bad_release(apps, namespace, daemon, kafka)

        async def in_health_check() -> list[dict[str, Any]]:
            items = await _remediations(daemon)
            rollbacks = [i for i in items if i["action"] == "rollback"]
            return plan_steps(daemon, rollbacks[0]["id"]) if rollbacks else []

        steps = await eventually(
            in_health_check,
            lambda s: bool(s) and s[-1]["kind"] == "verify_health" and not s[-1]["finished_at"],
            timeout=120,
            what="the plan to hang in its health check",
        )
        assert [s["status"] for s in steps[:-1]] == ["succeeded", "succeeded"]

        assert daemon.proc is not None
        sent = time.monotonic()
        daemon.proc.send_signal(signal.SIGTERM)
        # Draining starts at once, long before the plan's step is given up.
        late = payload([alert(name="HighErrorRate", service="checkout", namespace=namespace,
                              fingerprint="after-sigterm",
                              starts_at=datetime.now(UTC).isoformat())])  # fmt: skip
        code, body = await asyncio.to_thread(post, daemon, orjson.dumps(late))
        assert code == 503, body
        assert "draining" in body["error"]
        assert time.monotonic() - sent < BUDGET_SECONDS / 2
        ready, _ = await asyncio.to_thread(daemon.get, "/readyz", auth=False)
        assert ready == 503

        exit_code = await asyncio.to_thread(daemon.proc.wait, BUDGET_SECONDS + 30)
        elapsed = time.monotonic() - sent
        daemon.proc = None
        assert exit_code == 0
        assert elapsed < BUDGET_SECONDS + EXIT_SLACK_SECONDS, elapsed
        log = daemon.log_path.read_text()
        order = [
            log.index("stop requested: draining"),
            log.index("waiting up to"),  # running plans get their share of the budget
            log.index("drained in"),
        ]
        assert order == sorted(order), log[-3000:]
        assert "Traceback" not in log

        # The interrupted check only reads: the restart runs it again, and now it passes.
        health_endpoint.healthy.set()
        daemon.start()
        done = await eventually(
            lambda: _remediations(daemon),
            lambda items: any(
                i["action"] == "rollback" and i["status"] in ("succeeded", "failed", "needs_human")
                for i in items
            ),
            timeout=120,
            what="the resumed plan to end",
        )
        [rollback] = [i for i in done if i["action"] == "rollback"]
        assert rollback["status"] == "succeeded", rollback
        kinds = [s["kind"] for s in plan_steps(daemon, rollback["id"])]
        assert kinds.count("rollout_undo") == 1
        await assert_rolled_back_once(apps, namespace)
        # The alert answered 503 while draining was never journaled.
        assert not [s for s in daemon.signals() if s["kind"] == "HighErrorRate"]
    finally:
        if daemon.proc is not None:
            assert daemon.stop() == 0
