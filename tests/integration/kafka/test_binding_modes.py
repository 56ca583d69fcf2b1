"""The CloudEvents Kafka binding against the real broker, both ways.

Out: every kind of event remediator publishes, read back from the topic and decoded by
the ``cloudevents`` SDK (PyPI, ``from_kafka``: it picks the mode from the headers),
gives back the same attributes and data; every CDEvent among them is valid.
In: the CDEvents conformance examples of the service events, in structured and in
binary mode, are journaled as deploy signals; a CloudEvent of another specversion goes
to the dead-letter topic saying why.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from cloudevents.core.bindings.kafka import KafkaMessage, from_kafka
from cloudevents.core.formats.json import JSONFormat

from remediator import kafka_binding
from remediator.connectors.kafka import KafkaPublisher
from remediator.domain.lifecycle import Remediation, RemediationStatus
from remediator.domain.outcomes import (
    OutcomeStage,
    incident_cdevent,
    outcome_event,
    rolledback_cdevent,
)
from remediator.domain.plans import ActionKind
from remediator.journal.sqlite import SqliteJournal
from remediator.ports import OutboxMessage
from tests.cdevents import binding_errors, conformance_example
from tests.integration.kafka.conftest import (
    committed_offsets,
    kafka_signals,
    produce,
    read_topic,
    settings_for,
    unique,
)
from tests.integration.kafka.test_intake import new_intake, running
from tests.polling import eventually

pytestmark = pytest.mark.integration

AT = datetime(2026, 11, 27, 9, 12, 3, 512000, tzinfo=UTC)
KINDS = ["deployment.succeeded", "deployment.succeeded", "deployment.rolledback",
         "deployment.removed"]  # fmt: skip
STATUS_OF_STAGE = {
    OutcomeStage.PLANNED: RemediationStatus.PLANNED,
    OutcomeStage.STARTED: RemediationStatus.RUNNING,
    OutcomeStage.SUCCEEDED: RemediationStatus.SUCCEEDED,
    OutcomeStage.FAILED: RemediationStatus.FAILED,
    OutcomeStage.SKIPPED: RemediationStatus.SKIPPED,
}


def every_published_kind() -> list[dict[str, Any]]:
    """One event of each type remediator publishes, as its builders make them."""
    remediation = Remediation(
        id="rem_1", signal_id="sig_1", service="checkout", namespace="shop",
        rule="high-error-rate-rollback", action=ActionKind.ROLLBACK,
        status=RemediationStatus.RUNNING, reason=None, manual=False, automated=True,
        created_at=AT, updated_at=AT, explanation="why",
    )  # fmt: skip
    events = [
        outcome_event(
            remediation_id="rem_1",
            status=status,
            service="checkout",
            namespace="shop",
            rule="r",
            action=ActionKind.ROLLBACK,
            reason=None,
            signal_id="sig_1",
            explanation="why",
            at=AT,
        )
        for status in STATUS_OF_STAGE.values()
    ]
    events += [
        incident_cdevent(remediation, resolved=False, namespace="shop", at=AT),
        rolledback_cdevent(
            remediation_id="rem_1", service="checkout", namespace="shop", to_revision="7", at=AT
        ),
        incident_cdevent(remediation, resolved=True, namespace="shop", at=AT),
    ]
    assert len({e["type"] for e in events}) == len(OutcomeStage) + 3
    return events


async def test_every_published_event_decodes_with_the_cloudevents_sdk(bootstrap: str) -> None:
    topic = unique("outcomes")
    publisher = KafkaPublisher(settings=settings_for(bootstrap, "unused", outcome_topic=topic))
    events = every_published_kind()
    try:
        await publisher.publish([
            OutboxMessage(id=e["id"], channel=publisher.channel, key="checkout", payload=e,
                          created_at=AT)
            for e in events
        ])  # fmt: skip
    finally:
        await publisher.close()
    records = await read_topic(bootstrap, topic, at_least=len(events), settle=0.5)
    assert len(records) == len(events)
    for record, sent in zip(records, events, strict=True):
        message = KafkaMessage(headers=dict(record.headers), key=record.key, value=record.value)
        decoded = from_kafka(message, JSONFormat())
        attributes = decoded.get_attributes()
        assert attributes.pop("partitionkey") == "checkout"  # the SDK's name for the key
        assert attributes.pop("time") == datetime.fromisoformat(sent["time"])
        assert attributes == {k: v for k, v in sent.items() if k not in ("data", "time")}
        assert decoded.get_data() == sent["data"]
        if sent["type"].startswith("dev.cdevents."):
            assert binding_errors(sent) == []


def binary_record(event: dict[str, Any]) -> tuple[bytes, list[tuple[str, bytes]]]:
    headers = [
        ("content-type" if name == "datacontenttype" else f"ce_{name}", str(value).encode())
        for name, value in event.items()
        if name != "data"
    ]
    return orjson.dumps(event["data"]), headers


def conformance_cloudevent(name: str, *, id: str) -> dict[str, Any]:
    """A conformance example in a CloudEvent as the CDEvents binding says (own id: the
    examples share ids, and each record here must be an event of its own)."""
    cdevent = conformance_example(name)
    cdevent["context"]["id"] = id
    context = cdevent["context"]
    return {
        "specversion": "1.0", "id": id, "source": context["source"], "type": context["type"],
        "subject": cdevent["subject"]["id"], "time": context["timestamp"],
        "datacontenttype": "application/json", "data": cdevent,
    }  # fmt: skip


async def test_conformance_examples_in_both_modes_are_journaled(
    bootstrap: str, journal: SqliteJournal
) -> None:
    topic = unique("deployments")
    settings = settings_for(bootstrap, topic)
    names = ["service_deployed", "service_upgraded", "service_rolledback", "service_removed"]
    values: list[dict[str, Any] | bytes] = []
    headers: list[list[tuple[str, bytes]]] = []
    for name in names:
        structured = conformance_cloudevent(name, id=f"{name}-structured")
        values.append(kafka_binding.encode(structured)[0])
        headers.append(kafka_binding.encode(structured)[1])
        value, binary_headers = binary_record(conformance_cloudevent(name, id=f"{name}-binary"))
        values.append(value)
        headers.append(binary_headers)
    old_spec = conformance_cloudevent("service_deployed", id="v03")
    old_spec["specversion"] = "0.3"
    values.append(orjson.dumps(old_spec))
    headers.append([("content-type", b"application/cloudevents+json")])
    await produce(bootstrap, topic, values, headers=headers)
    intake = new_intake(settings, journal)
    async with running(intake):
        await eventually(
            lambda: committed_offsets(bootstrap, settings.group_id),
            lambda o: o.get(TopicPartition(topic, 0)) == len(values),
            what="every record committed",
        )
    signals = await kafka_signals(journal)
    # Each example twice (structured, binary), each time the same signal but for its id.
    assert sorted((s["labels"]["event_type"], s["kind"]) for s in signals) == sorted(
        (conformance_example(name)["context"]["type"], kind)
        for name, kind in zip(names, KINDS, strict=True)
        for _mode in ("structured", "binary")
    )
    for signal in signals:
        assert (signal["service"], signal["namespace"]) == ("mySubject123", "test123")
        if signal["kind"] != "deployment.removed":  # removed names no artifact
            assert signal["labels"]["version"].startswith("sha256:")  # purl's %3A decoded
    [dead] = await read_topic(bootstrap, f"{topic}.dlq", at_least=1, settle=0.5)
    assert dict(dead.headers)["remediator-error"] == (
        b"specversion: '0.3' is not supported: remediator reads CloudEvents 1.0 only"
    )
