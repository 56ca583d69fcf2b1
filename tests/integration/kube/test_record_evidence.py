"""The record's Kubernetes events, read from a real apiserver a page at a time.

A namespace's events cannot be selected by name prefix, so the record step reads them
all in pages and keeps the workload's newest; it stops after a bound, and says so.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from remediator.connectors.kubernetes.client import KubeClient, Ref
from remediator.connectors.kubernetes.steps import KubernetesStepRunner
from remediator.domain.record_build import _evidence
from remediator.domain.rules import load_rule_pack
from remediator.domain.steps import RecordEvidenceParams, RecordEvidenceStep

pytestmark = pytest.mark.integration

SINCE = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


async def create_event(
    kc: KubeClient, ns: str, n: int, *, kind: str, name: str, at: datetime
) -> None:
    event_name = f"{name}.{n:06d}"
    stamp = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": event_name, "namespace": ns},
        "involvedObject": {"kind": kind, "name": name, "namespace": ns},
        "reason": f"Reason{n}",
        "message": f"event {n}",
        "type": "Warning",
        "count": 1,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "source": {"component": "test"},
    }
    await kc.create(Ref("Event", ns, event_name), body, dry_run=False)


def runner(kc: KubeClient, ns: str, **bounds: int) -> KubernetesStepRunner:
    pack = load_rule_pack(
        {
            "catalog.yaml": f"services:\n  checkout:\n    namespace: {ns}\n    workload: checkout\n"
            "    rollback: {strategy: rolling}\n"
        }
    )
    return KubernetesStepRunner(kube=kc, pack=pack, **bounds)


def step(ns: str) -> RecordEvidenceStep:
    params = RecordEvidenceParams(namespace=ns, service="checkout", deployment="checkout",
                                  since=SINCE)  # fmt: skip
    return RecordEvidenceStep(params=params, reason="test")


@pytest.fixture
async def busy_ns(kc: KubeClient, ns: str) -> str:
    """60 events of checkout's pods, one a second from SINCE (the first 4 before it), and
    between them 60 of other workloads, among them ``checkout2`` and ``cart-checkout``."""
    for n in range(60):
        at = SINCE + timedelta(seconds=n - 4)
        await create_event(kc, ns, n, kind="Pod", name=f"checkout-7d9f-{n % 3}", at=at)
        other = ("checkout2", "cart-checkout", "web")[n % 3]
        await create_event(kc, ns, 100 + n, kind="Pod", name=other, at=at)
    return ns


async def test_the_workloads_newest_events_are_kept_across_pages(
    kc: KubeClient, busy_ns: str
) -> None:
    detail = await runner(kc, busy_ns, event_page_size=7).run(
        step(busy_ns), service="checkout", dry_run=False, context={}
    )
    events = detail["events"]
    # 56 are at or after SINCE; the newest 50 are kept, oldest first.
    assert [e["message"] for e in events] == [f"event {n}" for n in range(10, 60)]
    assert {e["name"] for e in events} == {f"checkout-7d9f-{i}" for i in range(3)}
    assert detail["pods_affected"] == [f"checkout-7d9f-{i}" for i in range(3)]
    assert "events_note" not in detail
    assert _evidence(detail, claimed=True).note == ""


async def test_reading_stops_at_the_bound_and_the_record_says_so(
    kc: KubeClient, busy_ns: str
) -> None:
    detail = await runner(kc, busy_ns, event_page_size=10, events_read_at_most=30).run(
        step(busy_ns), service="checkout", dry_run=False, context={}
    )
    note = detail["events_note"]
    assert note == (
        f"only the first 30 events of namespace {busy_ns} were read; "
        "the workload's may be among the others"
    )
    assert 0 < len(detail["events"]) < 30
    assert all(e["name"].startswith("checkout-7d9f-") for e in detail["events"])
    assert note in _evidence(detail, claimed=True).note


async def test_a_bound_the_namespace_fits_in_adds_no_note(kc: KubeClient, busy_ns: str) -> None:
    detail = await runner(kc, busy_ns, event_page_size=40, events_read_at_most=120).run(
        step(busy_ns), service="checkout", dry_run=False, context={}
    )
    assert "events_note" not in detail
    assert len(detail["events"]) == 50
