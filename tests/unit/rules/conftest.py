"""Shared builders for rule-engine tests: the shipped pack, signals and state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from remediator.domain.rules import RulePack, load_rule_pack
from remediator.domain.signals import Signal, Source, Status
from remediator.rulefiles import read_rule_files

REPO = Path(__file__).resolve().parents[3]
RULES_DIR = REPO / "rules"
NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def shipped_files() -> dict[str, str]:
    return read_rule_files(RULES_DIR)


@pytest.fixture(scope="session")
def pack() -> RulePack:
    return load_rule_pack(shipped_files())


def alert(
    name: str,
    *,
    service: str | None = "checkout",
    namespace: str | None = "shop",
    status: Status = Status.FIRING,
    starts_at: datetime = NOW - timedelta(minutes=10),
    **labels: str,
) -> Signal:
    all_labels = {"alertname": name, **labels}
    if service is not None:
        all_labels["service"] = service
    if namespace is not None:
        all_labels["namespace"] = namespace
    return Signal(
        key=f"am\x1ftest\x1f{name}\x1f{service}\x1f{starts_at.isoformat()}\x1f{status}",
        source=Source.ALERTMANAGER,
        kind=name,
        status=status,
        service=service,
        namespace=namespace,
        labels=all_labels,
        annotations={},
        starts_at=starts_at,
        ends_at=None,
        received_at=NOW,
    )


def event(
    kind: str, *, service: str = "checkout", namespace: str = "shop", **labels: str
) -> Signal:
    return Signal(
        key=f"ce\x1ftest\x1f{kind}\x1f{service}",
        source=Source.KAFKA,
        kind=kind,
        status=Status.EVENT,
        service=service,
        namespace=namespace,
        labels={"service": service, "namespace": namespace, **labels},
        annotations={},
        starts_at=NOW - timedelta(minutes=1),
        ends_at=None,
        received_at=NOW,
    )


def manual(
    kind: str, *, service: str = "checkout", namespace: str = "shop", **labels: str
) -> Signal:
    return Signal(
        key=f"manual\x1ftest\x1f{kind}\x1f{service}",
        source=Source.MANUAL,
        kind=kind,
        status=Status.EVENT,
        service=service,
        namespace=namespace,
        labels={"service": service, "namespace": namespace, **labels},
        annotations={},
        starts_at=NOW,
        ends_at=None,
        received_at=NOW,
    )
