"""Helpers for the Kafka tests: unique topics, producing, reading back, events."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from remediator.domain.rules import RulePack
from remediator.journal.sqlite import SqliteJournal
from remediator.rulefiles import load_rule_pack_from_path
from remediator.settings import KafkaSettings

REPO = Path(__file__).resolve().parents[3]
T = TypeVar("T")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def native(kind: str, *, id: str, service: str = "checkout", **data: Any) -> dict[str, Any]:
    """A native remediator event (structured-mode CloudEvent)."""
    return {
        "specversion": "1.0",
        "id": id,
        "type": f"io.remediator.{kind}",
        "source": "ci/deployer",
        "time": datetime.now(UTC).isoformat(),
        "datacontenttype": "application/json",
        "data": {"service": service, "namespace": "shop", **data},
    }


def settings_for(bootstrap: str, topic: str, **overrides: Any) -> KafkaSettings:
    values: dict[str, Any] = {
        "bootstrap_servers": (bootstrap,),
        "deploy_topics": (topic,),
        "group_id": unique("group"),
        "outcome_topic": unique("outcomes"),
        **overrides,
    }
    return KafkaSettings(**values)


async def create_topic(bootstrap: str, topic: str, *, partitions: int = 1) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name=topic, num_partitions=partitions, replication_factor=1)]
        )
    finally:
        await admin.close()


async def produce(
    bootstrap: str,
    topic: str,
    values: list[dict[str, Any] | bytes],
    *,
    key: bytes | None = b"checkout",
    partition: int | None = None,
    headers: list[list[tuple[str, bytes]]] | None = None,
) -> None:
    """Each value (JSON-encoded unless bytes) as one record, with ``headers[i]`` if given."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for n, value in enumerate(values):
            body = value if isinstance(value, bytes) else orjson.dumps(value)
            await producer.send_and_wait(topic, body, key=key, partition=partition,
                                         headers=headers[n] if headers else None)  # fmt: skip
    finally:
        await producer.stop()


async def read_topic(
    bootstrap: str, topic: str, *, settle: float = 2.0, at_least: int = 0, timeout: float = 60
) -> list[Any]:
    """Every record on ``topic`` (group-less, from the start): wait for ``at_least``,
    then keep reading ``settle`` seconds so extra (duplicate) records show up too."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
        enable_auto_commit=False,
    )  # fmt: skip
    await consumer.start()
    records: list[Any] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        quiet_until: float | None = None
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            for part in batch.values():
                records.extend(part)
            now = loop.time()
            if len(records) >= at_least:
                if quiet_until is None:
                    quiet_until = now + settle
                if now >= quiet_until:
                    return records
            elif now > deadline:
                raise AssertionError(f"{topic}: {len(records)} record(s), wanted {at_least}")
    finally:
        await consumer.stop()


async def committed_offsets(bootstrap: str, group: str) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in offsets.items()}


@pytest.fixture(scope="session")
def pack() -> RulePack:
    return load_rule_pack_from_path(REPO / "rules")


@pytest.fixture
def bootstrap(kafka: Any) -> str:
    return str(kafka.endpoints["kafka_bootstrap"])


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[SqliteJournal]:
    j = SqliteJournal(path=tmp_path / "journal.db")
    await j.open()
    try:
        yield j
    finally:
        await j.close()


async def kafka_signals(journal: SqliteJournal) -> list[dict[str, Any]]:
    page = await journal.list_signals(limit=1000)
    return [s for s in page.items if s.get("source") == "kafka"]
