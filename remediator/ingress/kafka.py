"""Deploy and migration events from Kafka into the journal: at least once, one effect.

Delivery: offsets are committed manually and only after the journal made the batch
durable, so a crash anywhere before the commit redelivers; the journal deduplicates
by the CloudEvent's ``source`` + ``id``, so a redelivery has no second effect.

Per batch from ``getmany``: each record is mapped to a ``Signal``; poison records
(not JSON, not a valid CloudEvent, or failing ``max_delivery_attempts`` times) go to
``<topic><dlq_suffix>`` with headers naming the error and where they came from, so
their partition keeps moving. The signals are written in one journal call; then the
dead letters are sent; then the offsets after the batch are committed.

A journal outage (``TemporaryError``) pauses the partitions, rewinds them to the first
record of the batch and retries after a backoff: nothing past an unjournaled record
is ever committed. A rebalance waits for the batch in flight to be committed before
the partitions go (``on_partitions_revoked`` is awaited by aiokafka before it rejoins).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import OffsetAndMetadata, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from remediator import kafka_binding
from remediator.domain.errors import InvalidInput, TemporaryError
from remediator.domain.limits import InputLimits
from remediator.domain.rules.events import known_event_types, signal_from_cloudevent
from remediator.domain.signals import Signal
from remediator.kafka_config import client_kwargs
from remediator.ports import OnJournaled, RecordResult, SignalStore, StoredSignal, newly_stored
from remediator.settings import KafkaSettings

log = logging.getLogger(__name__)

# Dead-letter headers (values are UTF-8 text); key and value are the original bytes.
H_ERROR = "remediator-error"
H_ERROR_KIND = "remediator-error-kind"  # unparseable | invalid | failed
H_TOPIC = "remediator-original-topic"
H_PARTITION = "remediator-original-partition"
H_OFFSET = "remediator-original-offset"
H_FAILED_AT = "remediator-failed-at"
MAX_ERROR_CHARS = 1000

MAX_BACKOFF_SECONDS = 30.0  # well below max.poll.interval (300 s): we never leave the group
START_RETRY_SECONDS = 5.0
DRAIN_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Poison:
    """A record that can never become a signal; it goes to the dead-letter topic."""

    kind: str  # unparseable | invalid | failed
    error: str


def parse_record(
    value: bytes | None,
    *,
    received_at: datetime,
    headers: Iterable[tuple[str, bytes]] = (),
    limits: InputLimits | None = None,
) -> Signal | Poison:
    """One record (a CloudEvent in either mode of the Kafka binding) -> ``Signal``, or why not.

    A record past ``limits`` (default ``InputLimits()``) is poison of kind ``invalid``,
    its error naming the field and the limit.

    Raises only for unexpected failures (bugs); those count toward
    ``max_delivery_attempts`` instead of going to the dead-letter topic at once.
    """
    limits = limits or InputLimits()
    headers = list(headers)
    # The whole event is kept with the signal; in binary mode its attributes are headers.
    size = len(value or b"") + sum(len(name) + len(raw) for name, raw in headers)
    if size > limits.event_bytes:
        return Poison(kind="invalid", error=f"event is {size} bytes, limit {limits.event_bytes}")
    try:
        event = kafka_binding.decode(value, headers)
        return signal_from_cloudevent(event, received_at=received_at, limits=limits)
    except kafka_binding.Unparseable as exc:
        return Poison(kind="unparseable", error=str(exc))
    except InvalidInput as exc:
        return Poison(kind="invalid", error=str(exc))
    except ValueError as exc:  # the Signal model's own validation (pydantic)
        return Poison(kind="invalid", error=str(exc).replace("\n", "; "))


def dead_letter_headers(
    *, poison: Poison, topic: str, partition: int, offset: int, failed_at: datetime
) -> list[tuple[str, bytes]]:
    return [
        # backslashreplace: an error quoting the record's odd text must still be sendable.
        (H_ERROR, poison.error[:MAX_ERROR_CHARS].encode("utf-8", "backslashreplace")),
        (H_ERROR_KIND, poison.kind.encode()),
        (H_TOPIC, topic.encode()),
        (H_PARTITION, str(partition).encode()),
        (H_OFFSET, str(offset).encode()),
        (H_FAILED_AT, failed_at.astimezone(UTC).isoformat().encode()),
    ]


OTHER_TYPE = "other"


def event_type_label(signal: Signal, known: frozenset[str] = known_event_types()) -> str:
    """Metric label: the CloudEvents type without its version suffix when it is one of
    ``known``, else ``other`` (the type comes from producers: bounded cardinality)."""
    ce_type = signal.labels.get("event_type", signal.kind)
    parts = ce_type.split(".")
    # dev.cdevents.service.deployed.0.3.0 -> dev.cdevents.service.deployed
    while len(parts) > 1 and parts[-1].isdigit():
        parts.pop()
    name = ".".join(parts)
    return name if name in known else OTHER_TYPE


class KafkaIntakeMetrics:
    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        internal_errors: Counter | None = None,
        journal_latency: Histogram | None = None,
        known_types: frozenset[str] = known_event_types(),
    ) -> None:
        # Shared with the rest of the daemon (remediator_internal_errors{component},
        # remediator_journal_latency_seconds).
        self.internal_errors = internal_errors
        self.journal_latency = journal_latency
        self.known_types = known_types
        self.consumed = Counter(
            "remediator_kafka_events_consumed",
            "Kafka events journaled (duplicates included), by CloudEvents type without its "
            "version: types remediator or its rules know by name, any other as other.",
            ["type"],
            registry=registry,
        )
        self.duplicates = Counter(
            "remediator_kafka_events_duplicate",
            "Kafka events whose id was already journaled (redeliveries).",
            registry=registry,
        )
        self.dead_lettered = Counter(
            "remediator_kafka_dead_lettered",
            "Records sent to the dead-letter topic, by original topic and error kind.",
            ["topic", "kind"],
            registry=registry,
        )
        self.lag = Gauge(
            "remediator_kafka_consumer_lag",
            "Records behind the partition's high watermark after the last batch.",
            ["topic", "partition"],
            registry=registry,
        )
        self.journal_retries = Counter(
            "remediator_kafka_journal_retries",
            "Batches rewound because the journal was unavailable.",
            registry=registry,
        )


class DeadLetters(Protocol):
    """Where poison records go (an idempotent producer in production)."""

    async def send(
        self,
        *,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]],
    ) -> None:
        """Durably written when this returns; raise TemporaryError otherwise."""
        ...

    async def close(self) -> None: ...


class KafkaDeadLetters:
    """Dead-letter producer; started lazily so a healthy stream never opens it."""

    def __init__(self, *, settings: KafkaSettings, timeout_seconds: float = 30.0) -> None:
        self._settings = settings
        self._timeout = timeout_seconds
        self._producer: Any = None

    async def send(
        self,
        *,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]],
    ) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                if self._producer is None:
                    producer = AIOKafkaProducer(
                        **client_kwargs(self._settings), acks="all", enable_idempotence=True
                    )
                    try:
                        await producer.start()
                    except BaseException:
                        await producer.stop()
                        raise
                    self._producer = producer
                await self._producer.send_and_wait(topic, value=value, key=key, headers=headers)
        except (KafkaError, TimeoutError) as exc:
            # A fresh producer next time: a broken one may hold stale sequence numbers.
            await self.close()
            raise TemporaryError(f"dead-letter topic {topic}: {exc!r}", delay=2.0) from exc

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()


@dataclass(slots=True)
class _Batch:
    """One getmany result, split into what goes to the journal and to the DLQ."""

    signals: list[tuple[TopicPartition, Any, Signal]] = field(default_factory=list)
    dead: list[tuple[TopicPartition, Any, Poison]] = field(default_factory=list)
    first: dict[TopicPartition, int] = field(default_factory=dict)  # rewind target
    commit: dict[TopicPartition, int] = field(default_factory=dict)  # next offset per tp
    retry_at: dict[TopicPartition, int] = field(default_factory=dict)  # stopped at a failure


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, intake: KafkaIntake) -> None:
        self._intake = intake

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._intake._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("kafka: assigned %s", _tps(assigned))


class KafkaIntake:
    """Root task ``run``; ``close`` in the drain (after the task is cancelled)."""

    def __init__(
        self,
        *,
        settings: KafkaSettings,
        journal: SignalStore,
        on_new_signals: OnJournaled,
        metrics: KafkaIntakeMetrics | None = None,
        dead_letters: DeadLetters | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_records: int = 500,
        poll_timeout_ms: int = 1000,
        consumer_options: Mapping[str, Any] | None = None,
        consumer_factory: Callable[..., Any] = AIOKafkaConsumer,
        limits: InputLimits | None = None,
    ) -> None:
        self._settings = settings
        self._limits = limits or InputLimits()
        self._journal = journal
        self._on_new_signals = on_new_signals
        self._metrics = metrics
        self._dead_letters: DeadLetters = dead_letters or KafkaDeadLetters(settings=settings)
        self._clock = clock
        self._sleep = sleep
        self._max_records = max_records
        self._poll_timeout_ms = poll_timeout_ms
        self._consumer_options = dict(consumer_options or {})
        self._consumer_factory = consumer_factory
        self._consumer: Any = None
        # Held while a batch is journaled and committed; the rebalance listener takes it
        # so partitions are only given up once what was processed is committed.
        self._lock = asyncio.Lock()
        self._inflight: asyncio.Task[float | None] | None = None
        self._attempts: dict[tuple[TopicPartition, int], int] = {}
        # Processed offsets whose commit failed for a retriable reason; retried with the
        # next commit (or on revocation).
        self._uncommitted: dict[TopicPartition, int] = {}
        self._backoff = 0.0
        self.started = asyncio.Event()  # joined the group (tests, readiness)

    @property
    def assignment(self) -> frozenset[TopicPartition]:
        """Partitions this member owns now (empty before joining and after close)."""
        consumer = self._consumer
        return frozenset(consumer.assignment()) if consumer is not None else frozenset()

    # -- lifecycle ---------------------------------------------------------------------
    async def run(self) -> None:
        """Consume until cancelled. Survives broker and journal outages (retrying)."""
        await self._start()
        consumer = self._consumer
        while True:
            try:
                batches = await consumer.getmany(
                    timeout_ms=self._poll_timeout_ms, max_records=self._max_records
                )
            except KafkaError as exc:  # coordinator/fetch errors surface here; they pass
                log.warning("kafka: fetch failed (%r); retrying in %.0fs", exc,
                            START_RETRY_SECONDS)  # fmt: skip
                await self._sleep(START_RETRY_SECONDS)
                continue
            if not batches:
                continue
            # Shielded: a cancelled run() (drain) leaves the batch to finish, and close()
            # waits for it, so a batch is never journaled without its commit attempted.
            self._inflight = asyncio.create_task(self._handle(batches), name="kafka-batch")
            delay = await asyncio.shield(self._inflight)
            if delay is not None:
                await self._sleep(delay)
                with contextlib.suppress(Exception):  # partitions may have been revoked
                    consumer.resume(*consumer.paused())

    async def close(self) -> None:
        """Finish the batch in flight (bounded), commit, leave the group, close producers."""
        inflight = self._inflight
        if inflight is not None and not inflight.done():
            try:
                await asyncio.wait_for(asyncio.shield(inflight), DRAIN_TIMEOUT_SECONDS)
            except TimeoutError:
                log.warning("kafka: batch still in flight at shutdown; it will be redelivered")
            except Exception:
                log.exception("kafka: batch failed during shutdown")
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            if self._uncommitted:
                await self._commit(consumer, {})
            # stop() leaves the group: the partitions move to another replica at once
            # instead of after session.timeout.ms.
            await consumer.stop()
        await self._dead_letters.close()

    async def _start(self) -> None:
        settings = self._settings
        while True:
            consumer = self._consumer_factory(
                **client_kwargs(settings),
                group_id=settings.group_id,
                enable_auto_commit=False,
                # A new group reads what is retained: deploy history is what the
                # engine needs, and the journal drops what it already has.
                auto_offset_reset="earliest",
                **self._consumer_options,
            )
            consumer.subscribe(list(settings.deploy_topics), listener=_Rebalance(self))
            try:
                await consumer.start()
            except KafkaError as exc:
                await consumer.stop()
                log.warning("kafka: cannot connect to %s (%r); retrying in %.0fs",
                            ",".join(settings.bootstrap_servers), exc,
                            START_RETRY_SECONDS)  # fmt: skip
                await self._sleep(START_RETRY_SECONDS)
                continue
            except BaseException:
                await consumer.stop()
                raise
            self._consumer = consumer
            log.info("kafka: consuming %s as group %s", ",".join(settings.deploy_topics),
                     settings.group_id)  # fmt: skip
            self.started.set()
            return

    # -- batches -----------------------------------------------------------------------
    async def _handle(self, batches: Mapping[TopicPartition, Sequence[Any]]) -> float | None:
        """Journal, dead-letter and commit one batch; the backoff to sleep, or None."""
        async with self._lock:
            consumer = self._consumer
            assigned = consumer.assignment()
            batch = self._split({tp: records for tp, records in batches.items() if tp in assigned})
            try:
                await self._journal_and_dead_letter(batch)
            except TemporaryError as exc:
                return self._rewind(consumer, batch, exc)
            except Exception as exc:  # noqa: BLE001 - a bug must not end consumption
                return self._rewind(consumer, batch, self._contained(exc))
            await self._commit(consumer, batch.commit)
            # Records behind the commit are done: forget their failure counts.
            for key in [k for k in self._attempts if k[1] < batch.commit.get(k[0], -1)]:
                del self._attempts[key]
            for tp, offset in batch.retry_at.items():
                if tp in consumer.assignment():
                    consumer.seek(tp, offset)
            self._observe_lag(consumer, batch.commit)
            self._backoff = 0.0
            return 0.2 if batch.retry_at else None

    def _split(self, batches: Mapping[TopicPartition, Sequence[Any]]) -> _Batch:
        batch = _Batch()
        received_at = self._clock()
        for tp, records in batches.items():
            if not records:
                continue
            batch.first[tp] = records[0].offset
            for record in records:
                parsed: Signal | Poison | None
                try:
                    parsed = parse_record(
                        record.value, headers=record.headers or (), received_at=received_at,
                        limits=self._limits,
                    )  # fmt: skip
                except Exception as exc:  # noqa: BLE001 - a bug in mapping: count, then DLQ
                    parsed = self._failed(tp, record, exc)
                if parsed is None:  # retry this record later; stop the partition here
                    batch.retry_at[tp] = record.offset
                    break
                if isinstance(parsed, Poison):
                    batch.dead.append((tp, record, parsed))
                else:
                    batch.signals.append((tp, record, parsed))
                batch.commit[tp] = record.offset + 1
        return batch

    def _count_journaled(self, signals: Sequence[Signal], results: Sequence[RecordResult]) -> None:
        metrics = self._metrics
        assert metrics is not None
        journaled_at = self._clock()
        for signal, result in zip(signals, results, strict=True):
            metrics.consumed.labels(event_type_label(signal, metrics.known_types)).inc()
            if result.duplicate:
                metrics.duplicates.inc()
            elif metrics.journal_latency is not None:
                waited = (journaled_at - signal.received_at).total_seconds()
                metrics.journal_latency.observe(max(0.0, waited))

    def _failed(self, tp: TopicPartition, record: Any, exc: BaseException) -> Poison | None:
        """Count a failed delivery; after max_delivery_attempts the record is poison."""
        key = (tp, record.offset)
        attempts = self._attempts.get(key, 0) + 1
        limit = self._settings.max_delivery_attempts
        log.warning("kafka: %s@%d failed (attempt %d of %d): %r",
                    _tp(tp), record.offset, attempts, limit, exc)  # fmt: skip
        if attempts >= limit:
            self._attempts.pop(key, None)
            return Poison(kind="failed", error=f"failed {attempts} times: {exc!r}")
        self._attempts[key] = attempts
        return None

    async def _journal_and_dead_letter(self, batch: _Batch) -> None:
        if batch.signals:
            signals = [signal for _, _, signal in batch.signals]
            stored: list[StoredSignal] = []
            try:
                results = await self._journal.record_signals(signals)
                stored = newly_stored(signals, results)
            except TemporaryError:
                raise
            except Exception as exc:  # noqa: BLE001 - the journal refused something in it
                log.warning("kafka: journal refused a batch (%r); writing one by one", exc)
                results = await self._record_one_by_one(batch)  # read back when decided
            if self._metrics is not None:
                self._count_journaled(signals, results)
            if any(not r.duplicate for r in results):
                self._on_new_signals(stored)
        failed_at = self._clock()
        for tp, record, poison in batch.dead:
            dlq_topic = tp.topic + self._settings.dlq_suffix
            await self._dead_letters.send(
                topic=dlq_topic,
                key=record.key,
                value=record.value,
                headers=dead_letter_headers(
                    poison=poison, topic=tp.topic, partition=tp.partition,
                    offset=record.offset, failed_at=failed_at,
                ),
            )  # fmt: skip
            log.warning("kafka: %s@%d -> %s (%s: %s)", _tp(tp), record.offset, dlq_topic,
                        poison.kind, poison.error)  # fmt: skip
            if self._metrics is not None:
                self._metrics.dead_lettered.labels(tp.topic, poison.kind).inc()

    async def _record_one_by_one(self, batch: _Batch) -> list[Any]:
        """Find the record(s) the journal refuses; they count as failed deliveries."""
        kept: list[tuple[TopicPartition, Any, Signal]] = []
        results: list[Any] = []
        stopped: set[TopicPartition] = set()
        for tp, record, signal in batch.signals:
            if tp in stopped:
                continue
            try:
                [result] = await self._journal.record_signals([signal])
            except TemporaryError:
                raise
            except Exception as exc:  # noqa: BLE001 - count toward the DLQ
                poison = self._failed(tp, record, exc)
                if poison is None:
                    stopped.add(tp)
                    batch.retry_at[tp] = record.offset
                    batch.commit[tp] = record.offset
                    batch.dead = [
                        d for d in batch.dead if d[0] != tp or d[1].offset < record.offset
                    ]
                else:
                    batch.dead.append((tp, record, poison))
                continue
            kept.append((tp, record, signal))
            results.append(result)
        batch.signals = kept
        batch.dead.sort(key=lambda d: (d[0].topic, d[0].partition, d[1].offset))
        return results

    def _contained(self, exc: Exception) -> TemporaryError:
        """An unexpected error in a batch: counted, logged in one line, retried like an
        outage (nothing past the batch is committed). Errors of one record never get
        here: mapping and journal refusals are per record and end in the DLQ."""
        log.error("kafka: unexpected %s while handling a batch; it will be retried",
                  type(exc).__name__)  # fmt: skip
        log.debug("kafka: unexpected error in a batch", exc_info=exc)
        if self._metrics is not None and self._metrics.internal_errors is not None:
            self._metrics.internal_errors.labels(component="kafka").inc()
        return TemporaryError(f"unexpected {type(exc).__name__}", delay=START_RETRY_SECONDS)

    def _rewind(self, consumer: Any, batch: _Batch, exc: TemporaryError) -> float:
        """Pause, and rewind to the batch's first record: it is fetched again later."""
        self._backoff = min(max(exc.delay, self._backoff * 2, 0.5), MAX_BACKOFF_SECONDS)
        log.warning("kafka: %s; pausing %d partition(s), retry in %.1fs",
                    exc, len(batch.first), self._backoff)  # fmt: skip
        assigned = consumer.assignment()
        consumer.pause(*assigned)
        for tp, offset in batch.first.items():
            if tp in assigned:
                consumer.seek(tp, offset)
        if self._metrics is not None:
            self._metrics.journal_retries.inc()
        return self._backoff

    async def _commit(self, consumer: Any, offsets: Mapping[TopicPartition, int]) -> None:
        pending = {**self._uncommitted, **offsets}
        assigned = consumer.assignment()
        pending = {tp: o for tp, o in pending.items() if tp in assigned}
        if not pending:
            self._uncommitted.clear()
            return
        try:
            await consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in pending.items()})
        except CommitFailedError as exc:
            # The group moved on: the new owner starts from the last commit and the
            # journal drops what we already stored.
            log.warning("kafka: commit lost to a rebalance (%s); redelivery is deduplicated",
                        exc)  # fmt: skip
            self._uncommitted.clear()
        except KafkaError as exc:
            log.warning("kafka: commit failed (%r); retrying with the next batch", exc)
            self._uncommitted = pending
        else:
            self._uncommitted.clear()

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        # Waits for the batch in flight (journal write + commit); the journal retry
        # backoff happens outside the lock, so this never waits out an outage.
        async with self._lock:
            consumer = self._consumer
            if consumer is not None and self._uncommitted:
                await self._commit(consumer, {})
            for key in [k for k in self._attempts if k[0] in revoked]:
                del self._attempts[key]
            if self._metrics is not None:
                for tp in revoked:
                    with contextlib.suppress(KeyError):
                        self._metrics.lag.remove(tp.topic, str(tp.partition))
        log.info("kafka: revoked %s", _tps(revoked))

    def _observe_lag(self, consumer: Any, positions: Mapping[TopicPartition, int]) -> None:
        if self._metrics is None:
            return
        for tp, position in positions.items():
            highwater = consumer.highwater(tp)
            if highwater is not None:
                self._metrics.lag.labels(tp.topic, str(tp.partition)).set(
                    max(highwater - position, 0)
                )


def _tp(tp: TopicPartition) -> str:
    return f"{tp.topic}[{tp.partition}]"


def _tps(tps: set[TopicPartition]) -> str:
    return ", ".join(sorted(map(_tp, tps))) or "nothing"


__all__ = [
    "H_ERROR",
    "H_ERROR_KIND",
    "H_FAILED_AT",
    "H_OFFSET",
    "H_PARTITION",
    "H_TOPIC",
    "DeadLetters",
    "KafkaDeadLetters",
    "KafkaIntake",
    "KafkaIntakeMetrics",
    "Poison",
    "dead_letter_headers",
    "event_type_label",
    "parse_record",
]
