"""Plans always end, with the daemon as a process on the kwok cluster:

- an unexpected error inside one service's plan (the executor.step failpoint) ends
  that plan ``failed`` and frees the service; the other service's plan succeeds;
- a Lease another replica holds is asked for with backoff, not hundreds of times a
  second, and the plan runs once the holder lets go;
- a Lease taken over mid-plan stops the plan before its next step (``needs_human``).
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.api_client import ApiClient

from tests.e2e.daemon import RULES, Daemon
from tests.e2e.test_alertmanager_intake import wait_for
from tests.e2e.test_rollback import bad_release
from tests.faults.conftest import HealthEndpoint
from tests.faults.test_shutdown import plan_steps, rules_with_health
from tests.integration.kube.conftest import Kubectl, deployment, rolled_out
from tests.polling import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
FINAL = ("succeeded", "failed", "needs_human")


@pytest.fixture
def shop(kube: Any) -> Iterator[tuple[Kubectl, str]]:
    kubectl = Kubectl(kube)
    ns = f"faults-{uuid.uuid4().hex[:8]}"
    kubectl.run("create", "namespace", ns)
    yield kubectl, ns
    kubectl.run("delete", "namespace", ns, "--wait=false")


def two_services(tmp: Path, namespace: str) -> Path:
    directory = tmp / "rules"
    directory.mkdir()
    for name in ("defaults.yaml", "remediation.yaml"):
        shutil.copy(RULES / name, directory / name)
    (directory / "catalog.yaml").write_text(
        "services:\n"
        + "".join(
            f"  {name}:\n    namespace: {namespace}\n    workload: {name}\n"
            "    rollback: {strategy: rolling}\n"
            "    scale: {min_replicas: 2, max_replicas: 6, step: 1}\n"
            for name in ("cart", "ledger")
        )
    )
    return directory


def deploy_both(kubectl: Kubectl, namespace: str, tmp: Path) -> None:
    for name in ("cart", "ledger"):
        manifest = tmp / f"{name}.json"
        manifest.write_text(orjson.dumps(deployment(name, f"example/{name}:1")).decode())
        kubectl.run("apply", "-n", namespace, "-f", str(manifest))
        wait_for(
            lambda n=name: rolled_out(kubectl.json("get", "deployment", n, "-n", namespace)),
            timeout=60,
            what=f"{name} rolled out",
        )


def acting_daemon(tmp: Path, kube: Any, rules: Path, **env: str) -> Daemon:
    return Daemon(
        tmp / "daemon",
        rules=rules,
        extra_env={
            "REMEDIATOR_KUBERNETES__KUBECONFIG": kube.endpoints["kubeconfig"],
            "REMEDIATOR_KUBERNETES__INSTANCE_ID": "faults-daemon",
            **env,
        },
    )


def ended(d: Daemon, service: str) -> dict[str, Any] | None:
    for item in d.remediations():
        if item["service"] == service and item["status"] in FINAL:
            return item
    return None


def test_an_unexpected_error_in_a_plan_ends_it_failed_and_frees_the_service(
    kube: Any, shop: tuple[Kubectl, str], tmp_path: Path
) -> None:
    kubectl, ns = shop
    deploy_both(kubectl, ns, tmp_path)
    d = acting_daemon(tmp_path, kube, two_services(tmp_path, ns),
                      REMEDIATOR_FAILPOINTS="executor.step:ledger*1")  # fmt: skip
    d.start()
    try:
        d.post_alert("CPUSaturation", "ledger", ns, "cpu-ledger")
        d.post_alert("CPUSaturation", "cart", ns, "cpu-cart")
        wait_for(lambda: ended(d, "ledger") and ended(d, "cart"), timeout=60, what="both end")
        ledger, cart = ended(d, "ledger"), ended(d, "cart")
        assert ledger is not None and cart is not None
        assert ledger["status"] == "failed", ledger
        assert "InjectedFault" in (ledger["reason"] or ""), ledger
        assert cart["status"] == "succeeded", cart
        assert kubectl.json("get", "deployment", "cart", "-n", ns)["spec"]["replicas"] == 3
        assert kubectl.json("get", "deployment", "ledger", "-n", ns)["spec"]["replicas"] == 2
        # The lock was released: no Lease names this daemon any more.
        leases = kubectl.json("get", "leases", "-n", ns)["items"]
        assert all(not (lease["spec"].get("holderIdentity")) for lease in leases), leases
        assert d.metric('remediator_internal_errors_total{component="executor"}') == 1
        assert (
            d.metric('remediator_remediations_finished_total{action="scale_up",status="failed"}')
            == 1
        )
    finally:
        assert d.stop() == 0


def hold_lease(kubectl: Kubectl, namespace: str, service: str, holder: str, tmp: Path) -> None:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": f"remediator-{service}", "namespace": namespace},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 3600,
                 "acquireTime": now, "renewTime": now, "leaseTransitions": 0},
    }  # fmt: skip
    manifest = tmp / f"lease-{service}.json"
    manifest.write_text(orjson.dumps(lease).decode())
    kubectl.run("apply", "-f", str(manifest))


def test_a_lease_held_elsewhere_is_retried_with_backoff_then_acted_on_once(
    kube: Any, shop: tuple[Kubectl, str], tmp_path: Path
) -> None:
    kubectl, ns = shop
    deploy_both(kubectl, ns, tmp_path)
    hold_lease(kubectl, ns, "cart", "other-replica", tmp_path)
    d = acting_daemon(
        tmp_path,
        kube,
        two_services(tmp_path, ns),
        REMEDIATOR_KUBERNETES__LOCK_RETRY_BASE_SECONDS="1",
        REMEDIATOR_KUBERNETES__LOCK_RETRY_MAX_SECONDS="2",
    )
    d.start()
    try:
        d.post_alert("CPUSaturation", "cart", ns, "cpu-cart")
        metric = 'remediator_lock_attempts_total{result="held_elsewhere"}'
        wait_for(lambda: d.metric(metric) >= 1, timeout=30, what="the first refusal")
        started, first = time.monotonic(), d.metric(metric)
        # Meanwhile another service is not held up.
        d.post_alert("CPUSaturation", "ledger", ns, "cpu-ledger")
        wait_for(lambda: ended(d, "ledger") is not None, timeout=60, what="ledger's plan")
        assert ended(d, "cart") is None
        # Let several retries happen, then compare their count with the time they took.
        wait_for(lambda: d.metric(metric) >= first + 4, timeout=30, what="more retries")
        attempts, elapsed = d.metric(metric) - first, time.monotonic() - started
        # Waits are at least half their period: 0.5 s, then 1 s at the 2 s cap.
        assert attempts <= 2 + elapsed / 1.0, (attempts, elapsed)
        kubectl.run("delete", "lease", "remediator-cart", "-n", ns)
        wait_for(lambda: ended(d, "cart") is not None, timeout=30, what="cart's plan")
        cart = ended(d, "cart")
        assert cart is not None and cart["status"] == "succeeded", cart
        assert kubectl.json("get", "deployment", "cart", "-n", ns)["spec"]["replicas"] == 3
        assert d.metric('remediator_lock_attempts_total{result="acquired"}') == 2
        log = d.log_path.read_text()
        # One line when the wait began, not one per attempt.
        assert log.count("cannot take the lock of cart") == 1, log[-2000:]
    finally:
        assert d.stop() == 0


async def test_a_lease_taken_over_mid_plan_stops_it_before_the_next_step(
    api: ApiClient,
    namespace: str,
    kube: Any,
    kafka: Any,
    tmp_path: Path,
    health_endpoint: HealthEndpoint,
) -> None:
    topic = f"deployments-{uuid.uuid4().hex[:8]}"
    d = acting_daemon(
        tmp_path,
        kube,
        rules_with_health(tmp_path, namespace, health_endpoint.url),
        REMEDIATOR_KUBERNETES__HEALTH_TIMEOUT_SECONDS="600",
        REMEDIATOR_KUBERNETES__LEASE_DURATION_SECONDS="15",  # renewed every 5 s
        REMEDIATOR_KAFKA__BOOTSTRAP_SERVERS=kafka.endpoints["kafka_bootstrap"],
        REMEDIATOR_KAFKA__DEPLOY_TOPICS=topic,
        REMEDIATOR_KAFKA__GROUP_ID=f"g-{topic}",
    )
    d.topic = topic  # type: ignore[attr-defined]
    d.start()
    try:
        await bad_release(client.AppsV1Api(api), namespace, d, kafka)

        async def in_health_check() -> list[dict[str, Any]]:
            items = await asyncio.to_thread(d.remediations)
            rollbacks = [i for i in items if i["action"] == "rollback"]
            return plan_steps(d, rollbacks[0]["id"]) if rollbacks else []

        await eventually(
            in_health_check,
            lambda s: bool(s) and s[-1]["kind"] == "verify_health" and not s[-1]["finished_at"],
            timeout=120,
            what="the plan to be in its health check",
        )
        # Another replica takes the Lease over, as it would after an expiry it saw.
        kubectl = Kubectl(kube)
        hold_lease(kubectl, namespace, "checkout", "replica-b", tmp_path)
        await eventually(
            lambda: asyncio.to_thread(d.log_path.read_text),
            lambda text: "lost the Lease of" in text,
            timeout=30,
            what="the renewal to notice",
        )
        health_endpoint.healthy.set()
        items = await eventually(
            lambda: asyncio.to_thread(d.remediations),
            lambda items: any(i["action"] == "rollback" and i["status"] in FINAL for i in items),
            timeout=60,
            what="the plan to end",
        )
        [rollback] = [i for i in items if i["action"] == "rollback"]
        assert rollback["status"] == "needs_human", rollback
        kinds = [s["kind"] for s in plan_steps(d, rollback["id"])]
        assert "notify" not in kinds, kinds  # the step after the check never started
        assert d.metric("remediator_lease_lost_total") == 1
        lease = kubectl.json("get", "lease", "remediator-checkout", "-n", namespace)
        assert lease["spec"]["holderIdentity"] == "replica-b"
    finally:
        assert d.stop() == 0
