"""Live facts are advisory: when the cluster refuses to say how many replicas run (a
403, here from real RBAC), the decision engine decides on without them and keeps going."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from remediator.connectors.kubernetes.client import KubeClient, Ref, connect
from remediator.connectors.kubernetes.scale import KubernetesFacts
from remediator.domain.rules import RulePack, signal_from_cloudevent
from remediator.domain.signals import Signal, Source, Status
from remediator.engine.decider import DecisionEngine
from remediator.journal.sqlite import SqliteJournal
from remediator.rulefiles import load_rule_pack_from_path
from tests.integration.kube.conftest import Kubectl, deployment
from tests.polling import eventually

pytestmark = pytest.mark.integration

RULES = Path(__file__).resolve().parents[3] / "rules"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.fixture
async def no_deployments_client(
    kube: Any, kubectl: Kubectl, ns: str, tmp_path: Path
) -> AsyncIterator[KubeClient]:
    """A client authenticated as a ServiceAccount bound to no Role: every read of a
    Deployment (and its scale) is forbidden."""
    kubectl.run("create", "serviceaccount", "unprivileged", "-n", ns)
    token = kubectl.run("create", "token", "unprivileged", "-n", ns, "--duration=10m").strip()
    config = yaml.safe_load(Path(kube.endpoints["kubeconfig"]).read_text())
    config["users"] = [{"name": "admin", "user": {"token": token}}]
    path = tmp_path / "unprivileged-kubeconfig"
    path.write_text(yaml.safe_dump(config))
    client = await connect(kubeconfig=path)
    async with client:
        yield client


def pack_in(namespace: str) -> RulePack:
    """The shipped rules with checkout (rolling rollback) and web moved into ``namespace``."""
    pack = load_rule_pack_from_path(RULES)
    services = {
        name: pack.services[name].model_copy(update={"namespace": namespace})
        for name in ("checkout", "web")
    }
    return pack.model_copy(update={"services": services})


def deploy(n: int, *, namespace: str, at: datetime) -> Signal:
    return signal_from_cloudevent(
        {
            "specversion": "1.0",
            "id": f"deploy-checkout-{n}",
            "source": "/cd/pipeline",
            "type": "io.remediator.deployment.succeeded",
            "time": at.isoformat(),
            "data": {
                "service": "checkout",
                "namespace": namespace,
                "version": f"v1.{n}.0",
                "revision": str(n),
                "previous_revision": str(n - 1),
            },
        },
        received_at=NOW,
    )


def firing(name: str, *, service: str, namespace: str) -> Signal:
    starts_at = NOW - timedelta(minutes=5)
    return Signal(
        key=f"am\x1ftest\x1f{name}-{service}\x1f{starts_at.isoformat()}\x1ffiring",
        source=Source.ALERTMANAGER,
        kind=name,
        status=Status.FIRING,
        service=service,
        namespace=namespace,
        labels={"alertname": name, "service": service, "namespace": namespace},
        annotations={},
        starts_at=starts_at,
        ends_at=None,
        received_at=NOW,
    )


async def test_a_403_on_facts_still_plans_the_rollback_and_the_engine_lives(
    kc: KubeClient, no_deployments_client: KubeClient, ns: str, tmp_path: Path
) -> None:
    for name in ("checkout", "web"):
        await kc.create(Ref("Deployment", ns, name), deployment(name, "example/app:1"),
                        dry_run=False)  # fmt: skip
    facts = KubernetesFacts(no_deployments_client, deployments={"checkout": "checkout",
                                                                "web": "web"})  # fmt: skip
    journal = SqliteJournal(path=tmp_path / "journal.db")
    await journal.open()
    rollback = firing("PodNotReady", service="checkout", namespace=ns)
    scale = firing("CPUSaturation", service="web", namespace=ns)
    await journal.record_signals(
        [
            deploy(1, namespace=ns, at=NOW - timedelta(days=1)),
            deploy(2, namespace=ns, at=NOW - timedelta(minutes=8)),
            rollback,
            scale,
        ]
    )
    facts_errors: list[str] = []
    engine = DecisionEngine(journal=journal, pack=pack_in(ns), facts=facts, dry_run=False,
                            clock=lambda: NOW, on_facts_error=facts_errors.append)  # fmt: skip
    root = asyncio.create_task(engine.run())
    try:
        await eventually(lambda: journal.undecided_signals(limit=10), lambda left: not left.signals,
                         timeout=30, what="every signal decided")  # fmt: skip
        assert not root.done(), "the decision engine ended"
        page = await journal.list_remediations(limit=10)
    finally:
        root.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await root
        await journal.close()

    by_signal = {r.signal_id: r for r in page.items}
    planned = by_signal[rollback.id]
    assert (planned.status, planned.action) == ("planned", "rollback")
    skipped = by_signal[scale.id]
    assert (skipped.status, skipped.reason) == ("skipped", "not_applicable")
    assert "forbidden" in skipped.explanation
    # Only the scale-up read the forbidden facts: a rollback needs no replica count.
    assert facts_errors == ["web"]
