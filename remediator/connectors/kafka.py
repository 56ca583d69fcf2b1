"""Outcome events to Kafka: the ``EventPublisher`` the outbox relay drains into.

CloudEvents Kafka protocol binding, structured mode, encoded by ``remediator.kafka_binding``
(the value is the whole event as JSON, ``content-type: application/cloudevents+json``, no
``ce_*`` headers). The key is the service, so one service's events stay in order on one
partition.

The producer is idempotent (``enable_idempotence=True``, ``acks="all"``): its own
retries never write a record twice. ``publish`` returns only once every record is
acknowledged; the relay marks messages published only then.

``already_published`` reads the topic back, for the relay's messages that a stopped
relay may have published without marking them: every partition from the offset of a
time shortly before the earliest message was created (``read_back_margin_seconds``;
a record's timestamp is when a producer sent it, on some replica's clock) to the end,
at most ``read_back_limit`` records in all (shared evenly by the partitions, the
newest of each; so a read-back ends well within its timeout and cannot stall the
relay), matching the CloudEvents id (``kafka_binding.event_id``: either mode, so records
published by versions that added ``ce_*`` headers are recognised too).
A consumer of its own, without a group: nothing is committed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from remediator import kafka_binding
from remediator.domain.errors import TemporaryError
from remediator.kafka_config import client_kwargs
from remediator.ports import OutboxMessage
from remediator.settings import KafkaSettings

log = logging.getLogger(__name__)

PUBLISH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def kafka_channel(topic: str) -> str:
    """The outbox channel of a topic (what the engine writes outcome messages to)."""
    return f"kafka:{topic}"


class KafkaPublisher:
    """``EventPublisher`` for one topic; the producer (re)connects lazily."""

    def __init__(
        self,
        *,
        settings: KafkaSettings,
        topic: str | None = None,
        timeout_seconds: float = 30.0,
        metrics: KafkaOutboxMetrics | None = None,
        read_back_margin_seconds: float = 300.0,
        read_back_limit: int = 100_000,
    ) -> None:
        """``timeout_seconds`` bounds one publish and one read-back each."""
        self._settings = settings
        self.topic = topic or settings.outcome_topic
        self.channel = kafka_channel(self.topic)
        self._timeout = timeout_seconds
        self._metrics = metrics
        self._read_back_margin = timedelta(seconds=read_back_margin_seconds)
        self._read_back_limit = read_back_limit
        self._producer: Any = None

    async def publish(self, messages: Sequence[OutboxMessage]) -> None:
        if not messages:
            return
        began = time.monotonic()
        try:
            async with asyncio.timeout(self._timeout):
                producer = await self._ready_producer()
                # send() only enqueues (batching); the futures resolve on the broker's ack.
                acks = []
                for m in messages:
                    value, headers = kafka_binding.encode(m.payload)
                    key = m.key.encode() if m.key is not None else None
                    acks.append(await producer.send(self.topic, value=value, key=key,
                                                    headers=headers))  # fmt: skip
                await asyncio.gather(*acks)
        except (KafkaError, TimeoutError) as exc:
            # Start over with a new producer (new producer id): a broken one may hold
            # batches and sequence numbers from before the outage.
            await self.close()
            raise TemporaryError(f"kafka topic {self.topic}: {exc!r}", delay=2.0) from exc
        if self._metrics is not None:
            self._metrics.publish_duration.labels(self.channel).observe(time.monotonic() - began)

    async def already_published(self, messages: Sequence[OutboxMessage]) -> set[str]:
        if not messages:
            return set()
        wanted = {m.id for m in messages}
        since = min(m.created_at for m in messages) - self._read_back_margin
        began = time.monotonic()
        try:
            async with asyncio.timeout(self._timeout):
                partitions = await self._partitions()
                found, scanned = await self._read_back(
                    partitions, wanted, since_ms=int(since.timestamp() * 1000)
                )
        except (KafkaError, TimeoutError) as exc:
            raise TemporaryError(
                f"kafka topic {self.topic}: could not read it back: {exc!r}", delay=2.0
            ) from exc
        log.info(
            "kafka topic %s: read back %d record(s) in %.1fs; %d of %d message(s) are there",
            self.topic, scanned, time.monotonic() - began, len(found), len(wanted),
        )  # fmt: skip
        return found

    async def _partitions(self) -> list[TopicPartition]:
        # The producer is about to publish to the topic anyway; asking it also
        # connects it before the relay renews its lease.
        producer = await self._ready_producer()
        ids = await producer.partitions_for(self.topic)
        return [TopicPartition(self.topic, p) for p in sorted(ids)]

    async def _read_back(
        self, partitions: list[TopicPartition], wanted: set[str], *, since_ms: int
    ) -> tuple[set[str], int]:
        """Ids of ``wanted`` found from ``since_ms`` to the end; and records read."""
        consumer = AIOKafkaConsumer(
            **client_kwargs(self._settings),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            request_timeout_ms=int(self._timeout * 1000),
        )
        await consumer.start()
        try:
            ranges = await self._ranges(consumer, partitions, since_ms=since_ms)
            return await self._scan(consumer, ranges, wanted)
        finally:
            await consumer.stop()

    async def _ranges(
        self, consumer: Any, partitions: list[TopicPartition], *, since_ms: int
    ) -> dict[TopicPartition, tuple[int, int]]:
        """Per partition, the offsets to read: [first record at or after ``since_ms``,
        end), at most its share of ``read_back_limit`` (the newest records)."""
        starts = await consumer.offsets_for_times({tp: since_ms for tp in partitions})
        ends = await consumer.end_offsets(partitions)
        share = max(1, self._read_back_limit // max(1, len(partitions)))
        ranges: dict[TopicPartition, tuple[int, int]] = {}
        for tp in partitions:
            end = ends[tp]
            start = starts[tp].offset if starts.get(tp) is not None else end
            if end - start > share:
                log.warning(
                    "kafka topic %s: reading back only the last %d of %d record(s) of"
                    " partition %d; an event published earlier is not found and goes out"
                    " again", self.topic, share, end - start, tp.partition,
                )  # fmt: skip
                start = end - share
            if start < end:
                ranges[tp] = (start, end)
        return ranges

    @staticmethod
    async def _scan(
        consumer: Any, ranges: dict[TopicPartition, tuple[int, int]], wanted: set[str]
    ) -> tuple[set[str], int]:
        found: set[str] = set()
        scanned = 0
        if not ranges:
            return found, scanned
        consumer.assign(list(ranges))
        for tp, (start, _) in ranges.items():
            consumer.seek(tp, start)
        remaining = set(ranges)
        while remaining and found != wanted:
            batch = await consumer.getmany(*remaining, timeout_ms=500)
            for tp, records in batch.items():
                for record in records:
                    if record.offset >= ranges[tp][1]:
                        continue  # published after the read-back began
                    scanned += 1
                    rid = kafka_binding.event_id(record.value, record.headers or ())
                    if rid is not None and rid in wanted:
                        found.add(rid)
            for tp in list(remaining):
                if await consumer.position(tp) >= ranges[tp][1]:
                    remaining.discard(tp)
        return found, scanned

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()  # flushes what is pending, closes connections

    async def _ready_producer(self) -> Any:
        if self._producer is None:
            producer = AIOKafkaProducer(
                **client_kwargs(self._settings),
                acks="all",
                enable_idempotence=True,
                request_timeout_ms=int(self._timeout * 1000),
            )
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
            self._producer = producer
        return self._producer


class KafkaOutboxMetrics:
    """Outbox relay observer (structurally ``engine.outbox.RelayObserver``) + latency."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.backlog_gauge = Gauge(
            "remediator_outbox_backlog",
            "Outbox messages not yet published, by channel.",
            ["channel"],
            registry=registry,
        )
        self.published_total = Counter(
            "remediator_outbox_published",
            "Outbox messages published (acknowledged by the peer), by channel.",
            ["channel"],
            registry=registry,
        )
        self.failures = Counter(
            "remediator_outbox_publish_failures",
            "Publish attempts that failed and will be retried, by channel.",
            ["channel"],
            registry=registry,
        )
        self.publish_duration = Histogram(
            "remediator_outbox_publish_duration_seconds",
            "Time to publish one outbox batch until every record is acknowledged.",
            ["channel"],
            buckets=PUBLISH_BUCKETS,
            registry=registry,
        )
        self.found_published_total = Counter(
            "remediator_outbox_found_published",
            "Outbox messages found already on the channel (a relay published them and"
            " stopped before marking them) and marked without publishing again.",
            ["channel"],
            registry=registry,
        )
        self.leases_lost = Counter(
            "remediator_outbox_leases_lost",
            "Batches a relay did not publish because its lease ran out and another relay"
            " took them over.",
            ["channel"],
            registry=registry,
        )
        self._seen: set[str] = set()

    def backlog(self, counts: Mapping[str, int]) -> None:
        # A drained channel is absent from the journal's answer: report it as 0.
        self._seen.update(counts)
        for channel in self._seen:
            self.backlog_gauge.labels(channel).set(counts.get(channel, 0))

    def published(self, *, channel: str, count: int) -> None:
        self.published_total.labels(channel).inc(count)

    def failed(self, *, channel: str) -> None:
        self.failures.labels(channel).inc()

    def found_published(self, *, channel: str, count: int) -> None:
        self.found_published_total.labels(channel).inc(count)

    def lease_lost(self, *, channel: str) -> None:
        self.leases_lost.labels(channel).inc()
