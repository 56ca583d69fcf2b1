"""Outcome events: the outbox relay and KafkaPublisher against a real broker."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from remediator.connectors.kafka import KafkaOutboxMetrics, KafkaPublisher, kafka_channel
from remediator.domain.rules import RulePack
from remediator.domain.rules.events import signal_from_cloudevent
from remediator.engine.decider import DecisionEngine, UnknownFacts
from remediator.engine.outbox import OutboxRelay
from remediator.journal.sqlite import SqliteJournal
from remediator.ports import OutboxMessage
from tests.env.base import port_open
from tests.env.kafka import KafkaPeer
from tests.integration.kafka.conftest import native, read_topic, settings_for, unique
from tests.polling import eventually
from tests.unit.journal_helpers import outbox_messages

pytestmark = pytest.mark.integration


def message(n: int, *, channel: str) -> OutboxMessage:
    payload = {
        "specversion": "1.0", "id": f"rem_{n}:planned", "source": "/remediator",
        "type": "io.remediator.remediation.planned", "subject": "checkout",
        "data": {"remediation_id": f"rem_{n}"},
    }  # fmt: skip
    return OutboxMessage(
        id=payload["id"], channel=channel, key="checkout", payload=payload,
        created_at=datetime.now(UTC),
    )  # fmt: skip


async def test_publisher_writes_structured_cloudevents_keyed_by_service(bootstrap: str) -> None:
    topic = unique("outcomes")
    publisher = KafkaPublisher(settings=settings_for(bootstrap, "unused", outcome_topic=topic))
    assert publisher.channel == kafka_channel(topic) == f"kafka:{topic}"
    try:
        await publisher.publish([message(n, channel=publisher.channel) for n in range(3)])
    finally:
        await publisher.close()
    records = await read_topic(bootstrap, topic, at_least=3, settle=0.5)
    assert [orjson.loads(r.value)["id"] for r in records] == [f"rem_{n}:planned" for n in range(3)]
    assert {r.key for r in records} == {b"checkout"}
    # Structured mode and nothing else: a ce_* header would make it binary mode.
    assert [list(r.headers) for r in records] == [
        [("content-type", b"application/cloudevents+json")]
    ] * 3


@pytest.fixture
def own_kafka(tmp_path: Path) -> Iterator[KafkaPeer]:
    """A broker of this test's own: it is stopped and started again mid-test."""
    peer = KafkaPeer(workdir=tmp_path / "env")
    try:
        peer.start({})
        yield peer
    finally:
        peer.stop()


def _stop_broker(peer: KafkaPeer) -> None:
    [broker] = [p for p in peer.processes if p.name == "kafka"]
    broker.stop()


def _start_broker(peer: KafkaPeer) -> None:
    [broker] = [p for p in peer.processes if p.name == "kafka"]
    broker.start()  # same config, ports and data directory as before
    peer.wait_ready(
        lambda: port_open(peer.port) and peer._metadata_ok(), timeout=120, what="restart"
    )


async def test_an_outcome_made_while_the_broker_is_down_arrives_once(
    own_kafka: KafkaPeer, journal: SqliteJournal, pack: RulePack
) -> None:
    bootstrap = own_kafka.bootstrap
    topic = unique("outcomes")
    settings = settings_for(bootstrap, "unused", outcome_topic=topic)
    publisher = KafkaPublisher(settings=settings, timeout_seconds=5)
    registry = CollectorRegistry()
    relay = OutboxRelay(
        journal=journal, publisher=publisher, holder="replica-1", max_backoff_seconds=1.0,
        poll_seconds=0.2,
        observer=KafkaOutboxMetrics(registry),
    )  # fmt: skip
    engine = DecisionEngine(
        journal=journal, pack=pack, facts=UnknownFacts(), dry_run=False,
        outcome_channel=publisher.channel,
    )  # fmt: skip
    task = asyncio.create_task(relay.run())
    try:
        await asyncio.to_thread(_stop_broker, own_kafka)
        event = native("migration.failed", id="m-outage", migration="044", version="v3")
        await journal.record_signals([signal_from_cloudevent(event, received_at=datetime.now(UTC))])
        assert await engine.run_once() == 1
        [pending] = await outbox_messages(journal, publisher.channel, limit=10)
        event_id = pending.message.id
        await eventually(
            lambda: outbox_messages(journal, publisher.channel, limit=10),
            lambda p: bool(p) and p[0].attempts >= 2,
            what="failed publish attempts while the broker is down",
        )
        await asyncio.to_thread(_start_broker, own_kafka)
        await eventually(
            journal.outbox_backlog, lambda b: not b.get(publisher.channel), what="outbox drained"
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await publisher.close()
    records = await read_topic(bootstrap, topic, at_least=1, settle=3.0)
    ids = [orjson.loads(r.value)["id"] for r in records]
    assert ids == [event_id]
    body: dict[str, Any] = orjson.loads(records[0].value)
    assert body["type"] in (
        "io.remediator.remediation.planned",
        "io.remediator.remediation.skipped",
    )
    assert body["data"]["service"] == "checkout"
    assert records[0].key == b"checkout"
    assert (
        registry.get_sample_value(
            "remediator_outbox_published_total", {"channel": publisher.channel}
        )
        == 1
    )
    assert registry.get_sample_value(
        "remediator_outbox_publish_failures_total", {"channel": publisher.channel}
    ) >= 2  # fmt: skip
