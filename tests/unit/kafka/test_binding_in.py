"""Events in: both modes of the CloudEvents Kafka binding, detected as the binding says;
``data_base64``; ``specversion``; purls read with packageurl-python; and the CDEvents
conformance examples of the service events become the signals docs/events.md promises.

Records made by the ``cloudevents`` SDK (PyPI) are parsed too: what a producer using
the reference SDK sends is what remediator reads.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from cloudevents.core.bindings import kafka as sdk_kafka
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from remediator import kafka_binding
from remediator.domain.signals import Signal
from remediator.ingress.kafka import Poison, parse_record
from tests.cdevents import conformance_example

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
STRUCTURED = [("content-type", b"application/cloudevents+json")]
SERVICE_EXAMPLES = {
    "service_deployed": "deployment.succeeded",
    "service_upgraded": "deployment.succeeded",
    "service_rolledback": "deployment.rolledback",
    "service_removed": "deployment.removed",
}


def native(**changes: Any) -> dict[str, Any]:
    base = {
        "specversion": "1.0", "id": "e-1", "source": "ci/deployer",
        "type": "io.remediator.deployment.succeeded", "time": "2026-11-27T08:59:00Z",
        "datacontenttype": "application/json",
        "data": {"service": "checkout", "namespace": "shop", "revision": "8"},
    }  # fmt: skip
    return {**base, **changes}


def binary(event: dict[str, Any]) -> tuple[bytes | None, list[tuple[str, bytes]]]:
    """``event`` in binary mode, by hand, as the binding spells it."""
    headers = [
        ("content-type" if name == "datacontenttype" else f"ce_{name}", str(value).encode())
        for name, value in event.items()
        if name not in ("data", "data_base64")
    ]
    data = event.get("data")
    return (None if data is None else orjson.dumps(data)), headers


def signal(value: bytes | None, headers: list[tuple[str, bytes]]) -> Signal:
    parsed = parse_record(value, headers=headers, received_at=NOW)
    assert isinstance(parsed, Signal), parsed
    return parsed


def poison(value: bytes | None, headers: list[tuple[str, bytes]] | None = None) -> Poison:
    parsed = parse_record(value, headers=headers or [], received_at=NOW)
    assert isinstance(parsed, Poison), parsed
    return parsed


def cloudevent_of(cdevent: dict[str, Any]) -> dict[str, Any]:
    """A CDEvent in a CloudEvent as the CDEvents binding says."""
    context = cdevent["context"]
    return {
        "specversion": "1.0", "id": context["id"], "source": context["source"],
        "type": context["type"], "subject": cdevent["subject"]["id"],
        "time": context["timestamp"], "datacontenttype": "application/json", "data": cdevent,
    }  # fmt: skip


# -- modes -----------------------------------------------------------------------------
def test_binary_and_structured_records_of_one_event_are_one_signal() -> None:
    structured = signal(orjson.dumps(native()), STRUCTURED)
    by_headers = signal(*binary(native()))
    assert kafka_binding.content_mode(binary(native())[1]) is kafka_binding.ContentMode.BINARY
    assert by_headers.key == structured.key == "ce\x1fci/deployer\x1fe-1"
    assert by_headers.labels == structured.labels
    assert (by_headers.kind, by_headers.starts_at) == (structured.kind, structured.starts_at)


def test_a_structured_content_type_wins_over_ce_headers() -> None:
    """What remediator 0.1 published: structured, with ce_* headers beside (the binding
    says the content-type decides; the ce_id here is not the event's and is ignored)."""
    headers = [*STRUCTURED, ("ce_specversion", b"1.0"), ("ce_id", b"other")]
    assert kafka_binding.content_mode(headers) is kafka_binding.ContentMode.STRUCTURED
    assert signal(orjson.dumps(native()), headers).key == "ce\x1fci/deployer\x1fe-1"


def test_a_record_without_headers_is_structured_json_as_sent_by_hand() -> None:
    assert signal(orjson.dumps(native()), []).kind == "deployment.succeeded"


@pytest.mark.parametrize("to_message", [sdk_kafka.to_binary, sdk_kafka.to_structured])
def test_records_made_by_the_cloudevents_sdk_are_read(to_message: Any) -> None:
    attributes = {k: v for k, v in native().items() if k not in ("data", "time")}
    attributes["time"] = datetime(2026, 11, 27, 8, 59, tzinfo=UTC)
    sdk_event = CloudEvent(attributes=attributes, data=native()["data"])
    message = to_message(sdk_event, JSONFormat())
    parsed = signal(message.value, list(message.headers.items()))
    assert parsed.labels["revision"] == "8"
    assert parsed.starts_at == datetime(2026, 11, 27, 8, 59, tzinfo=UTC)


def test_binary_mode_without_a_value_is_an_event_without_data() -> None:
    event = native(data=None, subject="checkout")
    del event["data"]
    assert signal(*binary(event)).service == "checkout"


@pytest.mark.parametrize(
    ("value", "headers", "kind", "fragment"),
    [
        (b"{}", [("content-type", b"application/cloudevents+avro")], "invalid",
         "only the JSON event format"),
        (b"{not json", [("ce_specversion", b"1.0"), ("ce_id", b"1")], "unparseable",
         "binary mode: the value is not JSON"),
        (b"\x00\x01", [("ce_specversion", b"1.0"), ("ce_id", b"1"), ("ce_type", b"t"),
                       ("ce_source", b"s"), ("content-type", b"application/octet-stream")],
         "invalid", "reads JSON data only"),
        (b"{}", [("ce_specversion", b"1.0"), ("ce_id", b"\xff")], "invalid",
         "header ce_id: not UTF-8"),
        (b"{}", [("ce_specversion", b"1.0"), ("ce_id", b"1"), ("ce_id", b"2")], "invalid",
         "repeated"),
    ],
)  # fmt: skip
def test_records_the_binding_cannot_read_are_poison(
    value: bytes, headers: list[tuple[str, bytes]], kind: str, fragment: str
) -> None:
    found = poison(value, headers)
    assert (found.kind, fragment in found.error) == (kind, True), found


# -- specversion, data_base64 ---------------------------------------------------------
@pytest.mark.parametrize("version", ["0.3", "1.0.2", "2.0", "1"])
def test_only_specversion_1_0_is_accepted(version: str) -> None:
    for value, headers in (
        (orjson.dumps(native(specversion=version)), STRUCTURED),
        binary(native(specversion=version)),
    ):
        found = poison(value, headers)
        assert found.kind == "invalid"
        assert found.error == (
            f"specversion: {version!r} is not supported: remediator reads CloudEvents 1.0 only"
        )


def test_data_base64_is_decoded() -> None:
    data = orjson.dumps({"service": "checkout", "namespace": "shop", "revision": "9"})
    event = native(data_base64=base64.b64encode(data).decode())
    del event["data"]
    assert signal(orjson.dumps(event), STRUCTURED).labels["revision"] == "9"


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"data_base64": base64.b64encode(b'{"a": 1}').decode()}, "exclude each other"),
        ({"data": None, "data_base64": "not base64!"}, "data_base64: not base64"),
        ({"data": None, "data_base64": base64.b64encode(b"plain").decode()},
         "data_base64: does not hold JSON"),
        ({"data": None, "data_base64": base64.b64encode(b"[1]").decode()},
         "data_base64: data must be a JSON object"),
        ({"data": None, "datacontenttype": "text/plain",
          "data_base64": base64.b64encode(b"hi").decode()}, "reads JSON data only"),
    ],
)  # fmt: skip
def test_bad_data_base64_is_invalid(changes: dict[str, Any], fragment: str) -> None:
    event = native(**changes)
    if changes.get("data", "kept") is None:
        del event["data"]
    found = poison(orjson.dumps(event), STRUCTURED)
    assert found.kind == "invalid" and fragment in found.error, found


# -- purls ----------------------------------------------------------------------------
def cdevent(artifact: str) -> dict[str, Any]:
    example = conformance_example("service_deployed")
    example["subject"]["content"]["artifactId"] = artifact
    return cloudevent_of(example)


@pytest.mark.parametrize(
    ("artifact", "version"),
    [
        ("pkg:oci/myapp@sha256%3A0b31b1c0?repository_url=ghcr.io/x", "sha256:0b31b1c0"),
        ("pkg:oci/checkout@v1.4.0", "v1.4.0"),
        ("pkg:golang/github.com/x/checkout@v1.4.0%2Bmeta#cmd", "v1.4.0+meta"),
    ],
)
def test_a_purl_version_is_decoded_as_the_purl_spec_says(artifact: str, version: str) -> None:
    parsed = signal(orjson.dumps(cdevent(artifact)), STRUCTURED)
    assert parsed.labels["version"] == version
    assert parsed.labels["artifact"] == artifact


def test_a_purl_without_version_gives_no_version() -> None:
    assert "version" not in signal(orjson.dumps(cdevent("pkg:oci/myapp")), STRUCTURED).labels


def test_an_artifact_id_that_is_not_a_purl_is_invalid() -> None:
    found = poison(orjson.dumps(cdevent("checkout@v1.4.0")), STRUCTURED)
    assert found.kind == "invalid"
    assert found.error.startswith("data.subject.content.artifactId: not a package URL (purl)")


# -- CDEvents conformance examples -----------------------------------------------------
@pytest.mark.parametrize("name", sorted(SERVICE_EXAMPLES))
@pytest.mark.parametrize("mode", ["structured", "binary"])
def test_cdevents_conformance_examples_become_deploy_signals(name: str, mode: str) -> None:
    example = conformance_example(name)
    event = cloudevent_of(example)
    record = (orjson.dumps(event), STRUCTURED) if mode == "structured" else binary(event)
    parsed = signal(*record)
    assert parsed.kind == SERVICE_EXAMPLES[name]
    assert parsed.service == "mySubject123"  # subject.id
    assert parsed.namespace == "test123"  # subject.content.environment.id
    assert parsed.labels["event_type"] == example["context"]["type"]
    artifact = example["subject"]["content"].get("artifactId")
    if artifact is None:
        assert "version" not in parsed.labels  # service.removed names no artifact
    else:
        assert parsed.labels["version"].startswith("sha256:")  # %3A decoded
    assert parsed.key == f"ce\x1f{example['context']['source']}\x1f{example['context']['id']}"
