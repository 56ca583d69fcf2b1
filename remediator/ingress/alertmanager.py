"""Alertmanager webhook payload (version 4): validation and mapping to Signals."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Literal

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    TypeAdapter,
    ValidationError,
)

from remediator.domain.errors import InvalidInput
from remediator.domain.limits import InputLimits
from remediator.domain.signals import Signal, Source, Status, alert_key, resolve_label, signal_time

SUPPORTED_VERSION = "4"
# Alerts validated (and mapped to signals) between yields to the event loop: ~1 ms each.
ALERTS_PER_SLICE = 64
# Alertmanager marks "no end yet" with Go's zero time.
_GO_ZERO_YEAR = 1


def _timestamp_string(value: object) -> object:
    # Lax datetime parsing would take a number as epoch seconds; Alertmanager sends RFC 3339.
    if not isinstance(value, str):
        raise ValueError("expected an RFC 3339 timestamp string")
    return value


def _computable(value: datetime) -> datetime:
    """In UTC, within the range the rules can compute with (pydantic names the field)."""
    try:
        return signal_time(value, where="")
    except InvalidInput as exc:
        raise ValueError(exc.detail) from None


def _end(value: datetime) -> datetime | None:
    return None if value.year == _GO_ZERO_YEAR else _computable(value)


_TIME_RANGE = "Within 1970-01-01T00:00:00Z .. 9000-01-01T00:00:00Z once converted to UTC."
Timestamp = Annotated[datetime, BeforeValidator(_timestamp_string), Strict(False)]
StartTime = Annotated[Timestamp, AfterValidator(_computable)]
EndTime = Annotated[Timestamp, AfterValidator(_end)]


class AmAlert(BaseModel):
    """One alert of the payload. The OpenAPI document's AlertmanagerAlert is this model's
    JSON Schema (remediator/ingress/openapi.py)."""

    # strict: a label value of 5 or a status of true is a broken sender, not something to coerce.
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = {}
    startsAt: StartTime = Field(description=_TIME_RANGE)
    endsAt: EndTime | None = Field(  # None also for Go's zero time: no end yet
        None,
        description=f"{_TIME_RANGE} Go's zero time (0001-01-01T00:00:00Z), null or absent: no end.",
    )
    generatorURL: str = ""
    fingerprint: str = ""


class AmPayload(BaseModel):
    """Alertmanager webhook payload, version 4. Unknown fields are ignored.
    https://prometheus.io/docs/alerting/latest/configuration/#webhook_config"""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    # Checked before the model (parse_payload) to name the version in the answer.
    version: str = Field(json_schema_extra={"const": SUPPORTED_VERSION})
    receiver: str
    status: Literal["firing", "resolved"]
    alerts: list[AmAlert]
    groupKey: str = ""
    truncatedAlerts: int = Field(0, ge=0, description="Alerts Alertmanager left out (max_alerts).")
    groupLabels: dict[str, str] = {}
    commonLabels: dict[str, str] = {}
    commonAnnotations: dict[str, str] = {}
    externalURL: str = ""


def parse_payload(body: bytes, *, limits: InputLimits | None = None) -> AmPayload:
    """Parse and validate in one pass; InvalidInput names the offending field.

    Past ``limits`` (defaults: ``InputLimits()``): ``TooLarge`` for too many alerts,
    ``InvalidInput`` naming the field for an oversized label, annotation or text.
    """
    limits = limits or InputLimits()
    payload = _validated(_document(body, limits))
    check_limits(payload, limits)
    return payload


async def parse_payload_in_slices(
    body: bytes, *, limits: InputLimits | None = None, per_slice: int = ALERTS_PER_SLICE
) -> AmPayload:
    """``parse_payload``, yielding to the event loop between slices of alerts.

    Validating a 5,000-alert group takes some 60 ms, and a storm brings many groups at
    once: in slices, a health probe or a plan step waits for a slice, not a group. The
    answer is the same, errors included (a payload that fails is validated again in one
    pass, so the first problem named and the count of the others are parse_payload's).
    """
    limits = limits or InputLimits()
    document = _document(body, limits)
    alerts = document.get("alerts")
    if not isinstance(alerts, list) or len(alerts) <= per_slice:
        payload = _validated(document)
    else:
        try:
            envelope = AmPayload.model_validate({**document, "alerts": []})
            validated: list[AmAlert] = []
            for start in range(0, len(alerts), per_slice):
                await asyncio.sleep(0)
                validated += _ALERTS.validate_python(alerts[start : start + per_slice])
        except ValidationError:
            # Again in one pass: the first problem, and the count of the others, named
            # exactly as parse_payload names them.
            payload = _validated(document)
        else:
            payload = envelope.model_copy(update={"alerts": validated})
    check_limits(payload, limits)
    return payload


def _document(body: bytes, limits: InputLimits) -> dict[str, object]:
    """The JSON object of the body, its version and alert count checked."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"not valid JSON ({exc})", where="body") from exc
    if not isinstance(document, dict):
        raise InvalidInput(f"expected a JSON object, got {type(document).__name__}", where="body")
    version = document.get("version")
    if version != SUPPORTED_VERSION:
        raise InvalidInput(
            f'unsupported webhook payload version {version!r}; expected "{SUPPORTED_VERSION}"',
            where="version",
        )
    alerts = document.get("alerts")
    if isinstance(alerts, list):  # checked before validating thousands of alerts
        limits.check_alert_count(len(alerts), where="alerts")
    return document


def _validated(document: dict[str, object]) -> AmPayload:
    try:
        return AmPayload.model_validate(document)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        message = str(first["msg"]).removeprefix("Value error, ")
        raise InvalidInput(f"{message}{more}", where=field_path(first["loc"])) from exc


_ALERTS = TypeAdapter(list[AmAlert])


def check_limits(payload: AmPayload, limits: InputLimits) -> None:
    """Everything journaled from the payload within ``limits``; InvalidInput otherwise."""
    for name in ("receiver", "groupKey", "externalURL"):
        limits.check_text(getattr(payload, name), where=name)
    for index, alert in enumerate(payload.alerts):
        if limits.alert_fits(alert.labels, alert.annotations, alert.generatorURL,
                             alert.fingerprint):  # fmt: skip
            continue  # the usual case: no path built, nothing encoded
        where = f"alerts[{index}]"
        limits.check_labels(alert.labels, where=f"{where}.labels")
        limits.check_annotations(alert.annotations, where=f"{where}.annotations")
        limits.check_text(alert.generatorURL, where=f"{where}.generatorURL")
        limits.check_text(alert.fingerprint, where=f"{where}.fingerprint")


def field_path(loc: Sequence[int | str]) -> str:
    """('alerts', 3, 'startsAt') -> 'alerts[3].startsAt'."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def label_fingerprint(labels: dict[str, str]) -> str:
    """Stand-in when a sender omits ``fingerprint``: stable over the label set."""
    return hashlib.blake2b(
        orjson.dumps(labels, option=orjson.OPT_SORT_KEYS), digest_size=8
    ).hexdigest()


def to_signals(
    payload: AmPayload,
    *,
    received_at: datetime,
    service_labels: Sequence[str],
    namespace_labels: Sequence[str],
    received_by: str | None = None,
    alerts: Sequence[AmAlert] | None = None,
) -> list[Signal]:
    """The signals of ``payload``'s alerts (of ``alerts``, a slice of them, if given)."""
    signals = []
    for alert in payload.alerts if alerts is None else alerts:
        starts_at, ends_at = alert.startsAt, alert.endsAt  # UTC, checked by the model
        signals.append(
            Signal(
                key=alert_key(
                    receiver=payload.receiver,
                    fingerprint=alert.fingerprint or label_fingerprint(alert.labels),
                    starts_at=starts_at.isoformat(),
                    status=alert.status,
                ),
                source=Source.ALERTMANAGER,
                kind=alert.labels.get("alertname", ""),
                status=Status(alert.status),
                service=resolve_label(alert.labels, service_labels),
                namespace=resolve_label(alert.labels, namespace_labels),
                labels=alert.labels,
                annotations=alert.annotations,
                starts_at=starts_at,
                ends_at=ends_at,
                received_at=received_at,
                # labels, annotations, status and times have columns of their own
                raw={
                    "receiver": payload.receiver,
                    "groupKey": payload.groupKey,
                    "externalURL": payload.externalURL,
                    "generatorURL": alert.generatorURL,
                    "fingerprint": alert.fingerprint,
                },
                received_by=received_by,
            )
        )
    return signals
