"""aiokafka produces and consumes (with a consumer group) against the Kafka peer."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

pytestmark = pytest.mark.integration


async def test_produce_and_consume_with_group(kafka: Any) -> None:
    bootstrap = kafka.endpoints["kafka_bootstrap"]
    topic = f"deployments-{uuid.uuid4().hex[:8]}"
    group = f"remediator-{uuid.uuid4().hex[:8]}"

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(3):
            # The first send auto-creates the topic.
            await producer.send_and_wait(topic, f"event-{i}".encode(), key=b"checkout")
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        received: list[bytes] = []
        async with asyncio.timeout(60):
            while len(received) < 3:
                batch = await consumer.getmany(timeout_ms=1000)
                for records in batch.values():
                    received.extend(r.value for r in records)
        await consumer.commit()
        [partition] = consumer.assignment()
        committed = await consumer.committed(partition)
    finally:
        await consumer.stop()

    assert received == [b"event-0", b"event-1", b"event-2"]
    assert committed == 3  # the group coordinator stored the offset
