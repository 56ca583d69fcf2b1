"""One normalised model for every signal source (Alertmanager, Kafka, manual)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class Source(StrEnum):
    ALERTMANAGER = "alertmanager"
    KAFKA = "kafka"
    MANUAL = "manual"


class Status(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"
    EVENT = "event"  # a point-in-time event (deploy, migration, manual request)


# Prometheus label names cannot hold "." or "/": the Kubernetes label
# app.kubernetes.io/name reaches alerts as app_kubernetes_io_name (pod relabelling) or
# label_app_kubernetes_io_name (kube-state-metrics' kube_pod_labels).
DEFAULT_SERVICE_LABELS: tuple[str, ...] = (
    "service",
    "app_kubernetes_io_name",
    "label_app_kubernetes_io_name",
    "app",
    "job",
)
DEFAULT_NAMESPACE_LABELS: tuple[str, ...] = ("namespace",)


@dataclass(frozen=True, slots=True, kw_only=True)
class Signal:
    """Something that happened and may call for a remediation.

    ``key`` is the idempotency key: two deliveries of the same thing share it, and the
    journal stores each key once. ``id`` is derived from it, so a replay answers with
    the id of the signal first stored.
    """

    key: str
    source: Source
    kind: str  # alertname, or event type
    status: Status
    service: str | None
    namespace: str | None
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    starts_at: datetime | None
    ends_at: datetime | None
    received_at: datetime
    raw: Mapping[str, Any] = field(default_factory=dict)
    id: str = ""

    def __post_init__(self) -> None:
        if not self.id:
            object.__setattr__(self, "id", signal_id(self.key))

    @property
    def routable(self) -> bool:
        return self.service is not None


def signal_id(key: str) -> str:
    """Stable id for an idempotency key (short enough for URLs and logs)."""
    return "sig_" + hashlib.blake2b(key.encode(), digest_size=12).hexdigest()


def alert_key(*, receiver: str, fingerprint: str, starts_at: str, status: str) -> str:
    """Alertmanager resends the same alert on group changes, repeats and reloads.

    receiver + fingerprint + startsAt + status identifies one alert state: a new
    firing episode has a new startsAt, and resolution changes the status.
    """
    return f"am\x1f{receiver}\x1f{fingerprint}\x1f{starts_at}\x1f{status}"


def resolve_label(labels: Mapping[str, str], names: Sequence[str]) -> str | None:
    """First non-empty label among ``names``, in order of preference."""
    for name in names:
        value = labels.get(name)
        if value:
            return value
    return None
