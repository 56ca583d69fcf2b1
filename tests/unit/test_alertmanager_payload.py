from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

import orjson
import pytest

from remediator.domain.errors import InvalidInput
from remediator.domain.limits import InputLimits, TooLarge
from remediator.domain.signals import DEFAULT_NAMESPACE_LABELS, DEFAULT_SERVICE_LABELS, Status
from remediator.ingress.alertmanager import parse_payload, parse_payload_in_slices, to_signals
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


# -- limits: bounded input, refused naming the field, its size and the limit ----------------
MIB = 1024 * 1024


def refused(body: dict[str, object], limits: InputLimits | None = None) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        parse_payload(orjson.dumps(body), limits=limits)
    return info.value


def test_a_15_mib_label_value_is_refused_naming_the_label_and_sizes() -> None:
    alerts = [alert(fingerprint=f"f{i}") for i in range(3)]
    alerts.append(alert(fingerprint="big", extra_labels={"foo": "x" * (15 * MIB)}))
    error = refused(payload(alerts))
    assert str(error) == "alerts[3].labels.foo: value is 15728640 bytes, limit 4096"
    assert not isinstance(error, TooLarge)  # a 400, not a 413


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(
            {"extra_labels": {"foo": "x" * 101}},
            "alerts[0].labels.foo: value is 101 bytes, limit 100",
            id="label-value",
        ),
        pytest.param(
            # bytes, not characters: 51 "é" are 102 bytes
            {"extra_labels": {"foo": "é" * 51}},
            "alerts[0].labels.foo: value is 102 bytes, limit 100",
            id="label-value-utf8",
        ),
        pytest.param(
            {"extra_labels": {f"l{i}": "v" for i in range(5)}},
            "alerts[0].labels: 9 labels, limit 8",  # 4 from the fixture + 5
            id="label-count",
        ),
        pytest.param(
            {"extra_labels": {"n" * 33: "v"}},
            "alerts[0].labels: a name is 33 bytes, limit 32 ('nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn')",
            id="label-name",
        ),
        pytest.param(
            {"extra_labels": {"odd name": "x" * 101}},
            "alerts[0].labels['odd name']: value is 101 bytes, limit 100",
            id="odd-label-name-quoted",
        ),
        pytest.param(
            {"annotations": {"description": "d" * 201}},
            "alerts[0].annotations.description: value is 201 bytes, limit 200",
            id="annotation-value",
        ),
        pytest.param(
            {"annotations": {f"a{i}": "v" for i in range(9)}},
            "alerts[0].annotations: 9 annotations, limit 8",
            id="annotation-count",
        ),
        pytest.param(
            {"generatorURL": "http://p/" + "g" * 300},
            "alerts[0].generatorURL: value is 309 bytes, limit 300",
            id="generator-url",
        ),
        pytest.param(
            {"fingerprint": "f" * 301},
            "alerts[0].fingerprint: value is 301 bytes, limit 300",
            id="fingerprint",
        ),
    ],
)
def test_each_limit_on_an_alert_names_the_field(change: dict[str, object], message: str) -> None:
    limits = InputLimits(
        labels_per_signal=8, annotations_per_signal=8, name_bytes=32,
        label_value_bytes=100, annotation_value_bytes=200, field_bytes=300,
    )  # fmt: skip
    extra_labels = change.pop("extra_labels", None)
    body = {**alert(extra_labels=extra_labels), **change}  # type: ignore[arg-type]
    assert str(refused(payload([body]), limits)) == message


def test_payload_text_fields_are_bounded() -> None:
    limits = InputLimits(field_bytes=50)
    error = refused(payload([alert()], receiver="r" * 51), limits)
    assert str(error) == "receiver: value is 51 bytes, limit 50"
    error = refused(payload([alert()], externalURL="http://" + "a" * 50), limits)
    assert error.where == "externalURL"


def test_values_at_the_limits_are_accepted() -> None:
    limits = InputLimits(
        labels_per_signal=2, annotations_per_signal=2, name_bytes=9,
        label_value_bytes=10, annotation_value_bytes=12, field_bytes=100,
    )  # fmt: skip
    labels = {"alertname": "é" * 5, "namespa_e": "0123456789"}  # 10 bytes each, 9-byte names
    body = {**alert(), "labels": labels, "annotations": {"a": "x" * 12, "b": ""}}
    parsed = parse_payload(orjson.dumps(payload([body])), limits=limits)
    assert parsed.alerts[0].labels == labels
    one_more = {**body, "labels": {**labels, "alertname": "é" * 5 + "x"}}
    with pytest.raises(InvalidInput, match="value is 11 bytes, limit 10"):
        parse_payload(orjson.dumps(payload([one_more])), limits=limits)


def test_more_alerts_than_allowed_is_too_large_before_any_is_validated() -> None:
    limits = InputLimits(alerts_per_request=3)
    # Not even valid alerts: the count is checked first, so 5 000 000 cheap items cost
    # one len(), not 5 000 000 validations.
    error = refused({**payload([]), "alerts": [{"junk": i} for i in range(4)]}, limits)
    assert isinstance(error, TooLarge)
    assert error.where == "alerts"
    assert str(error).startswith("alerts: 4 alerts in one request, limit 3")
    assert "max_alerts" in str(error)
    assert len(parse_payload(orjson.dumps(payload([alert()] * 3)), limits=limits).alerts) == 3


def test_default_limits_take_a_typical_storm() -> None:
    from tests.unit.payloads import storm

    assert len(parse_payload(orjson.dumps(storm(5000))).alerts) == 5000
    with pytest.raises(TooLarge, match="5001 alerts in one request, limit 5000"):
        parse_payload(orjson.dumps(storm(5001)))


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="label_value_bytes must be at least 1"):
        InputLimits(label_value_bytes=0)


# -- in slices: the same answer, the loop free between slices --------------------------
def one_pass_error(body: bytes, limits: InputLimits | None = None) -> str:
    with pytest.raises(InvalidInput) as caught:
        parse_payload(body, limits=limits)
    return str(caught.value)


async def sliced_error(body: bytes, limits: InputLimits | None = None) -> str:
    with pytest.raises(InvalidInput) as caught:
        await parse_payload_in_slices(body, limits=limits, per_slice=16)
    return str(caught.value)


async def test_a_group_parsed_in_slices_is_the_group_parsed_in_one_pass() -> None:
    from tests.unit.payloads import storm

    body = orjson.dumps(storm(100))
    assert await parse_payload_in_slices(body, per_slice=16) == parse_payload(body)
    small = orjson.dumps(payload([alert()]))
    assert await parse_payload_in_slices(small, per_slice=16) == parse_payload(small)


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param({90: {"startsAt": 5}}, id="deep-alert"),
        pytest.param({3: {"status": "weird"}, 70: {"labels": {"a": 1}}}, id="two-slices"),
        pytest.param({70: {"startsAt": 5}, "groupKey": 7}, id="alert-and-later-field"),
        pytest.param({"receiver": None, 50: {"status": "x"}}, id="earlier-field-and-alert"),
        pytest.param({"truncatedAlerts": -1}, id="envelope-only"),
    ],
)
async def test_a_group_that_fails_in_slices_is_refused_as_in_one_pass(
    broken: dict[object, object],
) -> None:
    from tests.unit.payloads import storm

    body = storm(100)
    for where, change in broken.items():
        if isinstance(where, int):
            body["alerts"][where] = {**body["alerts"][where], **change}  # type: ignore[dict-item]
        else:
            body[str(where)] = change
    data = orjson.dumps(body)
    assert await sliced_error(data) == one_pass_error(data)


async def test_limits_are_checked_on_a_group_parsed_in_slices() -> None:
    from tests.unit.payloads import storm

    body = storm(100)
    body["alerts"][77]["labels"]["pod"] = "p" * 101
    data = orjson.dumps(body)
    limits = InputLimits(label_value_bytes=100)
    assert await sliced_error(data, limits) == one_pass_error(data, limits)
    assert (await sliced_error(data, limits)).startswith("alerts[77].labels.pod: value is 101")


async def test_the_loop_runs_between_slices() -> None:
    from tests.unit.payloads import storm

    turns = 0

    async def other_work() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(other_work())
    await asyncio.sleep(0)
    before = turns
    try:
        await parse_payload_in_slices(orjson.dumps(storm(100)), per_slice=16)
    finally:
        other.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await other
    assert turns - before >= 100 // 16  # once per slice at least
