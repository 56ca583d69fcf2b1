"""Kubernetes answers 403 for one service's namespace (the daemon's ServiceAccount
has docs/rbac.md's Role only in the other's): deciding goes on for both, the
forbidden one is skipped with the reason and notified, the other is acted on."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from tests.e2e.daemon import RULES, Daemon
from tests.e2e.test_alertmanager_intake import wait_for
from tests.integration.kube.conftest import Kubectl, deployment, rolled_out
from tests.integration.kube.test_rbac import bound, documented_rules

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


@pytest.fixture
def two_namespaces(kube: Any) -> Iterator[tuple[Kubectl, str, str]]:
    kubectl = Kubectl(kube)
    allowed, forbidden = (f"faults-{uuid.uuid4().hex[:8]}" for _ in range(2))
    for ns in (allowed, forbidden):
        kubectl.run("create", "namespace", ns)
    yield kubectl, allowed, forbidden
    for ns in (allowed, forbidden):
        kubectl.run("delete", "namespace", ns, "--wait=false")


def service_account_kubeconfig(kube: Any, kubectl: Kubectl, namespace: str, tmp: Path) -> Path:
    manifest = tmp / "rbac.yaml"
    manifest.write_text(yaml.safe_dump_all(bound(namespace, "remediator", documented_rules())))
    kubectl.run("apply", "-f", str(manifest))
    token = kubectl.run("create", "token", "remediator", "-n", namespace, "--duration=30m")
    config = yaml.safe_load(Path(kube.endpoints["kubeconfig"]).read_text())
    config["users"] = [{"name": "admin", "user": {"token": token.strip()}}]
    path = tmp / "sa-kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def rules_for(tmp: Path, allowed: str, forbidden: str) -> Path:
    directory = tmp / "rules"
    directory.mkdir()
    for name in ("defaults.yaml", "remediation.yaml"):
        shutil.copy(RULES / name, directory / name)
    # The allowed service comes first: the start-up check lists its namespace.
    (directory / "catalog.yaml").write_text(
        "services:\n"
        f"  cart:\n    namespace: {allowed}\n    workload: cart\n"
        "    rollback: {strategy: rolling}\n    scale: {min_replicas: 2, max_replicas: 6, step: 1}\n"
        f"  ledger:\n    namespace: {forbidden}\n    workload: ledger\n"
        "    rollback: {strategy: rolling}\n    scale: {min_replicas: 2, max_replicas: 6, step: 1}\n"
    )
    return directory


def test_a_403_for_one_service_stops_nothing_for_the_other(
    kube: Any, two_namespaces: tuple[Kubectl, str, str], tmp_path: Path
) -> None:
    kubectl, allowed, forbidden = two_namespaces
    for name, ns in (("cart", allowed), ("ledger", forbidden)):
        manifest = tmp_path / f"{name}.json"
        manifest.write_text(orjson.dumps(deployment(name, f"example/{name}:1")).decode())
        kubectl.run("apply", "-n", ns, "-f", str(manifest))
    wait_for(
        lambda: rolled_out(kubectl.json("get", "deployment", "cart", "-n", allowed)),
        timeout=60,
        what="cart rolled out",
    )
    d = Daemon(
        tmp_path / "daemon",
        rules=rules_for(tmp_path, allowed, forbidden),
        extra_env={
            "REMEDIATOR_KUBERNETES__KUBECONFIG": str(
                service_account_kubeconfig(kube, kubectl, allowed, tmp_path)
            ),
            "REMEDIATOR_KUBERNETES__INSTANCE_ID": "faults-forbidden",
        },
    )
    d.start()
    try:
        _, ready = d.get("/readyz", auth=False)
        assert ready["checks"]["kubernetes"] == "connected", ready
        d.post_alert(
            "CPUSaturation", "ledger", forbidden, "cpu-ledger"
        )  # the engine meets the 403 first
        d.post_alert("CPUSaturation", "cart", allowed, "cpu-cart")

        def finished(items: list[dict[str, Any]]) -> bool:
            cart = [i for i in items if i["service"] == "cart"]
            return bool(cart) and cart[0]["status"] in ("succeeded", "failed", "needs_human")

        wait_for(lambda: finished(d.remediations()), timeout=60, what="cart's scale-up to end")
        by_service = {r["service"]: r for r in d.remediations()}
        assert by_service["cart"]["action"] == "scale_up"
        assert by_service["cart"]["status"] == "succeeded", by_service["cart"]
        assert kubectl.json("get", "deployment", "cart", "-n", allowed)["spec"]["replicas"] == 3
        ledger = by_service["ledger"]
        assert (ledger["status"], ledger["reason"]) == ("skipped", "not_applicable")
        _, detail = d.get(f"/api/v1/remediations/{ledger['id']}")
        assert "forbidden" in detail["explanation"].lower(), detail["explanation"]
        assert d.metric('remediator_facts_errors_total{service="ledger"}') >= 1
        assert kubectl.json("get", "deployment", "ledger", "-n", forbidden)["spec"]["replicas"] == 2
        log = d.log_path.read_text()
        assert "Traceback" not in log
    finally:
        if d.proc is not None:
            assert d.stop() == 0
