"""One normalised model for every signal source (Alertmanager, Kafka, manual)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from remediator.domain.errors import InvalidInput


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

# The instants a signal may carry. Rules subtract and add windows (hours to weeks, years
# at most) to them; datetime overflows at years 1 and 9999, so anything this far from
# both ends stays computable, and no real alert or deploy happened outside it.
EARLIEST_SIGNAL_TIME = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_SIGNAL_TIME = datetime(9000, 1, 1, tzinfo=UTC)
ACCEPTED_TIME_RANGE = (
    f"{EARLIEST_SIGNAL_TIME:%Y-%m-%dT%H:%M:%SZ} .. {LATEST_SIGNAL_TIME:%Y-%m-%dT%H:%M:%SZ}"
)


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
    # The authenticated principal that sent it over the API (None: Kafka, or older rows).
    received_by: str | None = None

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


def signal_time(value: datetime, *, where: str) -> datetime:
    """``value`` in UTC, or ``InvalidInput`` naming ``where`` if it is outside the range
    the daemon can compute with. A time without a UTC offset is taken as UTC."""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    # Compared before converting: astimezone itself overflows near years 1 and 9999.
    if not EARLIEST_SIGNAL_TIME <= aware < LATEST_SIGNAL_TIME:
        raise InvalidInput(
            f"{value.isoformat()} is outside the accepted range {ACCEPTED_TIME_RANGE}",
            where=where,
        )
    return aware.astimezone(UTC)


def resolve_label(labels: Mapping[str, str], names: Sequence[str]) -> str | None:
    """First non-empty label among ``names``, in order of preference."""
    for name in names:
        value = labels.get(name)
        if value:
            return value
    return None
