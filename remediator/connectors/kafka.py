"""Outcome events to Kafka: the ``EventPublisher`` the outbox relay drains into.

CloudEvents Kafka protocol binding, structured mode: the value is the whole event as
JSON with ``content-type: application/cloudevents+json``; ``ce_id``/``ce_type``/
``ce_source`` headers repeat the attributes so consumers can filter without parsing
(structured-mode receivers ignore them). The key is the service, so one service's
events stay in order on one partition.

The producer is idempotent (``enable_idempotence=True``, ``acks="all"``): its own
retries never write a record twice. ``publish`` returns only once every record is
acknowledged; the relay marks messages published only then.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from remediator.domain.errors import TemporaryError
from remediator.kafka_config import client_kwargs
from remediator.ports import OutboxMessage
from remediator.settings import KafkaSettings

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/cloudevents+json"
PUBLISH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def kafka_channel(topic: str) -> str:
    """The outbox channel of a topic (what the engine writes outcome messages to)."""
    return f"kafka:{topic}"


def record_headers(payload: Mapping[str, Any]) -> list[tuple[str, bytes]]:
    headers = [("content-type", CONTENT_TYPE.encode())]
    for attribute in ("id", "type", "source", "subject"):
        value = payload.get(attribute)
        if isinstance(value, str) and value:
            headers.append((f"ce_{attribute}", value.encode()))
    return headers


class KafkaPublisher:
    """``EventPublisher`` for one topic; the producer (re)connects lazily."""

    def __init__(
        self,
        *,
        settings: KafkaSettings,
        topic: str | None = None,
        timeout_seconds: float = 30.0,
        metrics: KafkaOutboxMetrics | None = None,
    ) -> None:
        self._settings = settings
        self.topic = topic or settings.outcome_topic
        self.channel = kafka_channel(self.topic)
        self._timeout = timeout_seconds
        self._metrics = metrics
        self._producer: Any = None

    async def publish(self, messages: Sequence[OutboxMessage]) -> None:
        if not messages:
            return
        began = time.monotonic()
        try:
            async with asyncio.timeout(self._timeout):
                producer = await self._ready_producer()
                # send() only enqueues (batching); the futures resolve on the broker's ack.
                acks = [
                    await producer.send(
                        self.topic,
                        value=orjson.dumps(m.payload),
                        key=m.key.encode() if m.key is not None else None,
                        headers=record_headers(m.payload),
                    )
                    for m in messages
                ]
                await asyncio.gather(*acks)
        except (KafkaError, TimeoutError) as exc:
            # Start over with a new producer (new producer id): a broken one may hold
            # batches and sequence numbers from before the outage.
            await self.close()
            raise TemporaryError(f"kafka topic {self.topic}: {exc!r}", delay=2.0) from exc
        if self._metrics is not None:
            self._metrics.publish_duration.labels(self.channel).observe(time.monotonic() - began)

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
