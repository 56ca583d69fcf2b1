"""Each outcome event reaches the topic once, even when a relay dies between the
broker's acknowledgement and marking the outbox: the real broker, the real journals
(SQLite and PostgreSQL), the lease run out on an injected clock."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from remediator.connectors.kafka import KafkaOutboxMetrics, KafkaPublisher, kafka_channel
from remediator.engine.outbox import LEASE_SECONDS, OutboxRelay
from remediator.journal.postgres import PostgresJournal
from remediator.journal.sqlite import SqliteJournal
from remediator.ports import Journal, OutboxMessage
from tests.integration.kafka.conftest import (
    create_topic,
    produce,
    read_topic,
    settings_for,
    unique,
)
from tests.pgdb import fresh_database

pytestmark = pytest.mark.integration

SERVICES = ("checkout", "payments", "search")


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(params=["sqlite", "postgres"])
async def any_journal(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Journal]:
    journal: Journal
    if request.param == "sqlite":
        journal = SqliteJournal(path=tmp_path / "journal.db")
        await journal.open()
        try:
            yield journal
        finally:
            await journal.close()
        return
    server: Any = request.getfixturevalue("postgres")
    async with fresh_database(server.endpoints["postgres_dsn"]) as dsn:
        journal = PostgresJournal(dsn=dsn, instance="replica-b", pool_size=2)
        await journal.open()
        try:
            yield journal
        finally:
            await journal.close()


@pytest.fixture
async def topic(bootstrap: str) -> str:
    name = unique("outcomes")
    await create_topic(bootstrap, name, partitions=3)
    return name


def events(topic: str, count: int) -> list[OutboxMessage]:
    made = datetime.now(UTC)
    messages = []
    for n in range(count):
        service = SERVICES[n % len(SERVICES)]
        payload = {
            "specversion": "1.0", "id": f"rem_{n}:planned", "source": "/remediator",
            "type": "io.remediator.remediation.planned", "subject": service,
            "data": {"remediation_id": f"rem_{n}", "service": service},
        }  # fmt: skip
        messages.append(OutboxMessage(id=payload["id"], channel=kafka_channel(topic),
                                      key=service, payload=payload, created_at=made))  # fmt: skip
    return messages


async def publish_directly(bootstrap: str, topic: str, messages: list[OutboxMessage]) -> None:
    """What the dead relay got out before it died."""
    publisher = KafkaPublisher(settings=settings_for(bootstrap, "unused", outcome_topic=topic))
    try:
        await publisher.publish(messages)
    finally:
        await publisher.close()


async def relay_after_the_lease(
    bootstrap: str, topic: str, journal: Journal, clock: Clock, registry: CollectorRegistry
) -> int:
    """Another replica's relay, once the dead one's lease has run out: one pass."""
    clock.advance(LEASE_SECONDS + 1)
    publisher = KafkaPublisher(
        settings=settings_for(bootstrap, "unused", outcome_topic=topic), timeout_seconds=20
    )
    relay = OutboxRelay(journal=journal, publisher=publisher, holder="replica-b", clock=clock,
                        observer=KafkaOutboxMetrics(registry))  # fmt: skip
    try:
        return await relay.run_once()
    finally:
        await publisher.close()


async def ids_on(bootstrap: str, topic: str, *, at_least: int) -> Counter[str]:
    records = await read_topic(bootstrap, topic, at_least=at_least, settle=2.0)
    return Counter(str(orjson.loads(r.value)["id"]) for r in records)


def sample(registry: CollectorRegistry, name: str, topic: str) -> float | None:
    return registry.get_sample_value(name, {"channel": kafka_channel(topic)})


async def test_a_batch_published_by_a_relay_that_died_before_marking_it_is_not_sent_again(
    bootstrap: str, topic: str, any_journal: Journal
) -> None:
    journal, clock, registry = any_journal, Clock(), CollectorRegistry()
    messages = events(topic, 9)
    await journal.enqueue(messages)
    leased = await journal.pending(channel=kafka_channel(topic), limit=100, holder="replica-a",
                                   at=clock(), lease_seconds=LEASE_SECONDS)  # fmt: skip
    assert [p.message.id for p in leased] == [m.id for m in messages]
    await publish_directly(bootstrap, topic, messages)  # acknowledged; then SIGKILL

    assert await relay_after_the_lease(bootstrap, topic, journal, clock, registry) == 9

    assert await ids_on(bootstrap, topic, at_least=9) == Counter(m.id for m in messages)
    assert await journal.outbox_backlog() == {}
    assert sample(registry, "remediator_outbox_found_published_total", topic) == 9
    assert sample(registry, "remediator_outbox_published_total", topic) is None


async def test_a_batch_a_relay_leased_and_died_before_publishing_is_published_once(
    bootstrap: str, topic: str, any_journal: Journal
) -> None:
    journal, clock, registry = any_journal, Clock(), CollectorRegistry()
    messages = events(topic, 9)
    await journal.enqueue(messages)
    await journal.pending(channel=kafka_channel(topic), limit=100, holder="replica-a",
                          at=clock(), lease_seconds=LEASE_SECONDS)  # fmt: skip

    assert await relay_after_the_lease(bootstrap, topic, journal, clock, registry) == 9

    assert await ids_on(bootstrap, topic, at_least=9) == Counter(m.id for m in messages)
    assert await journal.outbox_backlog() == {}
    assert sample(registry, "remediator_outbox_published_total", topic) == 9


async def test_only_the_events_a_dead_relay_did_not_get_out_are_published_in_order(
    bootstrap: str, topic: str, journal: SqliteJournal
) -> None:
    clock, registry = Clock(), CollectorRegistry()
    messages = events(topic, 12)
    await journal.enqueue(messages)
    await journal.pending(channel=kafka_channel(topic), limit=100, holder="replica-a",
                          at=clock(), lease_seconds=LEASE_SECONDS)  # fmt: skip
    await publish_directly(bootstrap, topic, messages[:5])  # then died mid-batch

    assert await relay_after_the_lease(bootstrap, topic, journal, clock, registry) == 12

    records = await read_topic(bootstrap, topic, at_least=12, settle=2.0)
    assert Counter(str(orjson.loads(r.value)["id"]) for r in records) == Counter(
        m.id for m in messages
    )
    for service in SERVICES:  # each service's events in order on its partition
        mine = [orjson.loads(r.value)["id"] for r in records if r.key == service.encode()]
        assert mine == [m.id for m in messages if m.key == service]
    assert sample(registry, "remediator_outbox_found_published_total", topic) == 5
    assert sample(registry, "remediator_outbox_published_total", topic) == 7


async def test_reading_back_looks_from_shortly_before_the_events_were_made(
    bootstrap: str, topic: str
) -> None:
    messages = events(topic, 4)
    await publish_directly(bootstrap, topic, messages[:2])
    publisher = KafkaPublisher(
        settings=settings_for(bootstrap, "unused", outcome_topic=topic),
        read_back_margin_seconds=60,
    )
    try:
        assert await publisher.already_published(messages) == {m.id for m in messages[:2]}
        # Made an hour after those records were sent: they are before the window.
        later = [
            OutboxMessage(id=m.id, channel=m.channel, key=m.key, payload=m.payload,
                          created_at=m.created_at + timedelta(hours=1))
            for m in messages
        ]  # fmt: skip
        assert await publisher.already_published(later) == set()
        assert await publisher.already_published([]) == set()
    finally:
        await publisher.close()


async def test_reading_back_is_bounded_shared_by_the_partitions(bootstrap: str) -> None:
    topic = unique("outcomes")
    await create_topic(bootstrap, topic, partitions=2)
    messages = events(topic, 6)
    on_0 = [m for n, m in enumerate(messages) if n % 2 == 0]
    on_1 = [m for n, m in enumerate(messages) if n % 2 == 1]
    await produce_to(bootstrap, topic, 0, on_0)
    await produce_to(bootstrap, topic, 1, on_1)
    settings = settings_for(bootstrap, "unused", outcome_topic=topic)
    bounded = KafkaPublisher(settings=settings, read_back_limit=4)
    try:  # 2 records a partition, the newest
        assert await bounded.already_published(messages) == {m.id for m in on_0[1:] + on_1[1:]}
    finally:
        await bounded.close()
    whole = KafkaPublisher(settings=settings, read_back_limit=6)
    try:
        assert await whole.already_published(messages) == {m.id for m in messages}
    finally:
        await whole.close()


async def produce_to(
    bootstrap: str, topic: str, partition: int, messages: list[OutboxMessage]
) -> None:
    await produce(
        bootstrap, topic, [orjson.dumps(m.payload) for m in messages], partition=partition
    )


async def test_a_topic_nobody_published_to_holds_none_of_the_events(bootstrap: str) -> None:
    topic = unique("outcomes")
    await create_topic(bootstrap, topic, partitions=2)
    publisher = KafkaPublisher(settings=settings_for(bootstrap, "unused", outcome_topic=topic))
    try:
        assert await publisher.already_published(events(topic, 3)) == set()
    finally:
        await publisher.close()
