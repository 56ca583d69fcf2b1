from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from remediator.domain.errors import InvalidInput
from remediator.domain.signals import DEFAULT_NAMESPACE_LABELS, DEFAULT_SERVICE_LABELS, Status
from remediator.ingress.alertmanager import parse_payload, to_signals
from tests.unit.payloads import alert, payload

NOW = datetime(2026, 11, 27, 10, 5, tzinfo=UTC)


def signals_of(body: dict[str, object], **kwargs: object) -> list:
    return to_signals(
        parse_payload(orjson.dumps(body)),
        received_at=NOW,
        service_labels=kwargs.get("service_labels", DEFAULT_SERVICE_LABELS),
        namespace_labels=kwargs.get("namespace_labels", DEFAULT_NAMESPACE_LABELS),
    )


def test_firing_alert_becomes_a_routable_signal() -> None:
    [signal] = signals_of(payload([alert(fingerprint="abc")]))
    assert signal.kind == "HighErrorRate"
    assert signal.status is Status.FIRING
    assert (signal.service, signal.namespace) == ("checkout", "shop")
    assert signal.routable
    assert signal.ends_at is None  # Go's zero time means "still firing"
    assert signal.starts_at == datetime(2026, 11, 27, 10, 0, 0, 123456, tzinfo=UTC)
    assert signal.raw["fingerprint"] == "abc"
    assert signal.raw["receiver"] == "remediator"


def test_service_label_preference_order() -> None:
    labels = {"app": "from-app", "job": "from-job", "app_kubernetes_io_name": "from-k8s-name"}
    [signal] = signals_of(payload([alert(service=None, extra_labels=labels)]))
    assert signal.service == "from-k8s-name"


def test_configured_label_names_are_used() -> None:
    [signal] = signals_of(
        payload([alert(service=None, extra_labels={"team_service": "billing", "ns": "pay"})]),
        service_labels=("team_service",),
        namespace_labels=("ns",),
    )
    assert (signal.service, signal.namespace) == ("billing", "pay")


def test_alert_without_service_is_unroutable_not_dropped() -> None:
    [signal] = signals_of(payload([alert(service=None)]))
    assert signal.service is None
    assert not signal.routable


def test_key_is_receiver_fingerprint_startsat_status() -> None:
    base = signals_of(payload([alert(fingerprint="f1")]))[0]
    same = signals_of(payload([alert(fingerprint="f1")]))[0]
    assert base.key == same.key and base.id == same.id
    variants = [
        payload([alert(fingerprint="f1")], receiver="other"),
        payload([alert(fingerprint="f2")]),
        payload([alert(fingerprint="f1", starts_at="2026-11-27T11:00:00Z")]),
        payload([alert(fingerprint="f1", status="resolved")]),
    ]
    keys = {signals_of(v)[0].key for v in variants}
    assert base.key not in keys
    assert len(keys) == 4


def test_missing_fingerprint_falls_back_to_the_label_set() -> None:
    one = signals_of(payload([alert(extra_labels={"pod": "a"})]))[0]
    again = signals_of(payload([alert(extra_labels={"pod": "a"})]))[0]
    other = signals_of(payload([alert(extra_labels={"pod": "b"})]))[0]
    assert one.key == again.key != other.key


def test_unknown_fields_are_ignored() -> None:
    body = payload([{**alert(), "newField": {"x": 1}}], futureTopLevel=True)
    assert len(signals_of(body)) == 1


@pytest.mark.parametrize(
    ("body", "where", "fragment"),
    [
        (b"{not json", "body", "not valid JSON"),
        (b"[1, 2]", "body", "expected a JSON object"),
        (orjson.dumps(payload([alert()], version="3")), "version", 'expected "4"'),
        (
            orjson.dumps({k: v for k, v in payload([alert()]).items() if k != "version"}),
            "version",
            "None",
        ),
        (
            orjson.dumps({k: v for k, v in payload([alert()]).items() if k != "receiver"}),
            "receiver",
            "required",
        ),
        (orjson.dumps({**payload([alert()]), "alerts": "nope"}), "alerts", "valid list"),
        (orjson.dumps(payload([{**alert(), "startsAt": 12}])), "alerts[0].startsAt", "RFC 3339"),
        (
            orjson.dumps(payload([{**alert(), "startsAt": "yesterday"}])),
            "alerts[0].startsAt",
            "datetime",
        ),
        (
            orjson.dumps(payload([alert(), {**alert(), "status": "pending"}])),
            "alerts[1].status",
            "firing",
        ),
        (orjson.dumps(payload([alert(extra_labels={"x": 5})])), "alerts[0].labels.x", "string"),  # type: ignore[dict-item]
        (orjson.dumps(payload([alert()], truncatedAlerts="3")), "truncatedAlerts", "integer"),
        (
            orjson.dumps(payload([alert(starts_at="0001-01-01T00:00:00Z")])),
            "alerts[0].startsAt",
            "outside the accepted range 1970-01-01T00:00:00Z .. 9000-01-01T00:00:00Z",
        ),
        (
            orjson.dumps(payload([alert(), alert(starts_at="0001-01-01T00:10:00+01:00")])),
            "alerts[1].startsAt",
            "0001-01-01T00:10:00+01:00 is outside the accepted range",
        ),
        (
            orjson.dumps(payload([alert(starts_at="9999-12-31T23:59:59-01:00")])),
            "alerts[0].startsAt",
            "outside the accepted range",
        ),
        (
            orjson.dumps(payload([{**alert(), "endsAt": "9999-12-31T23:59:59-01:00"}])),
            "alerts[0].endsAt",
            "outside the accepted range",
        ),
    ],
)
def test_invalid_payloads_name_the_field(body: bytes, where: str, fragment: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_payload(body)
    assert info.value.where == where
    assert fragment in str(info.value)
    assert str(info.value).startswith(where)


def test_times_are_utc_and_go_zero_ends_mean_no_end() -> None:
    [offset, naive, zero, odd_zero] = signals_of(
        payload(
            [
                alert(fingerprint="a", starts_at="2026-11-27T11:00:00+01:00"),
                alert(fingerprint="b", starts_at="2026-11-27T10:00:00"),
                {**alert(fingerprint="c"), "endsAt": "0001-01-01T00:00:00Z"},
                {**alert(fingerprint="d"), "endsAt": "0001-01-01T00:10:00+01:00"},
            ]
        )
    )
    assert offset.starts_at == naive.starts_at == datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    assert offset.starts_at is not None and offset.starts_at.utcoffset() is not None
    assert zero.ends_at is None and odd_zero.ends_at is None


def test_a_resolved_alerts_end_is_kept_in_utc() -> None:
    [signal] = signals_of(
        payload([{**alert(status="resolved"), "endsAt": "2026-11-27T11:30:00+01:00"}])
    )
    assert signal.ends_at == datetime(2026, 11, 27, 10, 30, tzinfo=UTC)
    assert signal.ends_at is not None and signal.ends_at.tzinfo is UTC
