"""One Kafka record never stops the consumer: it goes to the DLQ, and the next one is read.

KafkaIntake runs its real loop (``run``) against the real SQLite journal; only the broker
is replaced, by an in-memory partition behind the few consumer calls the intake makes
(injected through ``consumer_factory``). tests/integration/kafka covers the real broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata, TopicPartition
from prometheus_client import CollectorRegistry

from remediator.domain.errors import InvalidInput
from remediator.domain.limits import InputLimits
from remediator.ingress import kafka as kafka_ingress
from remediator.ingress.kafka import KafkaIntake, KafkaIntakeMetrics
from remediator.journal.sqlite import SqliteJournal
from remediator.metrics import Metrics
from remediator.settings import KafkaSettings
from tests.polling import eventually

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
TOPIC = "deployments"
TP = TopicPartition(TOPIC, 0)


def event(event_id: str, **changes: Any) -> dict[str, Any]:
    base = {
        "specversion": "1.0", "id": event_id, "source": "ci/deployer",
        "type": "io.remediator.deployment.succeeded", "time": "2026-11-27T08:59:00Z",
        "data": {"service": "checkout", "namespace": "shop", "revision": event_id},
    }  # fmt: skip
    return {**base, **changes}


class InMemoryPartition:
    """Stands in for AIOKafkaConsumer: one partition, always assigned to this member."""

    def __init__(self, values: list[bytes], **options: Any) -> None:
        self.options = options
        self.records = [
            ConsumerRecord(
                topic=TOPIC, partition=0, offset=offset, timestamp=0, timestamp_type=0,
                key=b"checkout", value=value, checksum=None, serialized_key_size=8,
                serialized_value_size=len(value), headers=[],
            )
            for offset, value in enumerate(values)
        ]  # fmt: skip
        self.position = 0
        self.committed: int | None = None
        self.fetched: list[int] = []  # offsets handed out, in order (redeliveries repeat)
        self._paused: set[TopicPartition] = set()
        self._moved = asyncio.Event()

    def subscribe(self, topics: list[str], listener: Any) -> None:
        assert topics == [TOPIC]

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    async def getmany(
        self, *, timeout_ms: int, max_records: int
    ) -> Mapping[TopicPartition, list[Any]]:
        if TP in self._paused or self.position >= len(self.records):
            # Like a real poll: wait (bounded) for something to change.
            self._moved.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._moved.wait(), timeout_ms / 1000)
            return {}
        batch = self.records[self.position : self.position + max_records]
        self.position += len(batch)
        self.fetched += [r.offset for r in batch]
        return {TP: batch}

    async def commit(self, offsets: Mapping[TopicPartition, OffsetAndMetadata]) -> None:
        self.committed = offsets[TP].offset

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.position = offset
        self._moved.set()

    def pause(self, *tps: TopicPartition) -> None:
        self._paused.update(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self._paused.difference_update(tps)
        self._moved.set()

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    def highwater(self, tp: TopicPartition) -> int:
        return len(self.records)


class RecordingDeadLetters:
    """The DeadLetters port; ``fail_once`` raises an unexpected error on the first send."""

    def __init__(self, *, fail_once: BaseException | None = None) -> None:
        self.sent: list[dict[str, Any]] = []
        self._fail_once = fail_once

    async def send(
        self, *, topic: str, key: bytes | None, value: bytes | None,
        headers: list[tuple[str, bytes]],
    ) -> None:  # fmt: skip
        if self._fail_once is not None:
            failure, self._fail_once = self._fail_once, None
            raise failure
        self.sent.append({"topic": topic, "value": value, "headers": dict(headers)})

    async def close(self) -> None:
        pass


class Run:
    def __init__(
        self, intake: KafkaIntake, partition: InMemoryPartition, task: asyncio.Task[None]
    ) -> None:
        self.intake = intake
        self.partition = partition
        self.task = task

    async def until_committed(self, offset: int) -> None:
        async def committed() -> int | None:
            assert not self.task.done(), f"the consumer task ended: {self.task!r}"
            return self.partition.committed

        await eventually(
            committed, lambda c: c == offset, timeout=20, interval=0.01, what=f"commit {offset}"
        )


StartRun = Callable[..., contextlib.AbstractAsyncContextManager[Run]]


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[SqliteJournal]:
    journal = SqliteJournal(path=tmp_path / "journal.db")
    await journal.open()
    yield journal
    await journal.close()


@pytest.fixture
def start(journal: SqliteJournal) -> StartRun:
    @contextlib.asynccontextmanager
    async def start(
        values: list[bytes],
        *,
        dead_letters: RecordingDeadLetters,
        metrics: KafkaIntakeMetrics | None = None,
        max_delivery_attempts: int = 3,
        limits: InputLimits | None = None,
    ) -> AsyncIterator[Run]:
        partition: InMemoryPartition | None = None

        def factory(**options: Any) -> InMemoryPartition:
            nonlocal partition
            partition = InMemoryPartition(values, **options)
            return partition

        async def no_wait(delay: float) -> None:
            await asyncio.sleep(0)

        intake = KafkaIntake(
            settings=KafkaSettings(
                bootstrap_servers=("broker:9092",), deploy_topics=(TOPIC,),
                max_delivery_attempts=max_delivery_attempts,
            ),
            journal=journal, on_new_signals=lambda stored: None, metrics=metrics,
            dead_letters=dead_letters, clock=lambda: NOW, sleep=no_wait,
            poll_timeout_ms=20, consumer_factory=factory, limits=limits,
        )  # fmt: skip
        task = asyncio.create_task(intake.run(), name="kafka-intake")
        try:
            await asyncio.wait_for(intake.started.wait(), 10)
            assert partition is not None
            yield Run(intake, partition, task)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await intake.close()

    return start


async def journaled_ids(journal: SqliteJournal) -> list[str]:
    page = await journal.list_signals(limit=1000)
    return sorted(item["labels"]["revision"] for item in page.items)


@pytest.fixture
def no_error_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG, logger="remediator")
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
    assert not [r for r in caplog.records if r.exc_info and r.levelno > logging.DEBUG]


@pytest.mark.parametrize(
    ("poison", "kind", "fragment"),
    [
        pytest.param(event("bad", time="0001-01-01T00:00:00Z"), b"invalid", b"time: ", id="go-zero"),
        pytest.param(event("bad", time="0001-01-01T00:10:00+01:00"), b"invalid", b"time: ",
                     id="underflow"),
        pytest.param(event("bad", time="9999-12-31T23:59:59-01:00"), b"invalid", b"time: ",
                     id="overflow"),
        pytest.param(event("bad", time="9500-01-01T00:00:00Z"), b"invalid", b"accepted range",
                     id="past-range"),
        pytest.param(event("bad", data='{"service": "\\ud800"}'), b"invalid", b"data: ",
                     id="surrogate"),
        pytest.param(event("bad", data="[" * 100_000 + "]" * 100_000), b"invalid", b"data: ",
                     id="deep"),
        pytest.param(event("bad", data=[1]), b"invalid", b"data: ", id="data-list"),
        pytest.param(event(""), b"invalid", b"id: ", id="no-id"),
        pytest.param(b"\xff\xfe not json", b"unparseable", b"not JSON", id="not-json"),
        pytest.param(b"", b"unparseable", b"empty", id="empty"),
        # Past the default limits: what the event maps to is too large to journal.
        pytest.param(event("bad", data={"service": "checkout", "revision": "r" * 5000}),
                     b"invalid", b"labels.revision: value is 5000 bytes, limit 4096",
                     id="label-too-long"),
        pytest.param(event("bad", data={"service": "checkout", "message": "m" * 20000}),
                     b"invalid", b"annotations.message: value is 20000 bytes, limit 16384",
                     id="annotation-too-long"),
        pytest.param(event("bad", data={"service": "checkout", "blob": "b" * 300_000}),
                     b"invalid", b"event is 300", id="event-too-large"),
    ],
)  # fmt: skip
async def test_a_bad_record_goes_to_the_dlq_and_the_next_is_journaled(
    start: StartRun, journal: SqliteJournal, no_error_logs: None,
    poison: bytes | dict[str, Any], kind: bytes, fragment: bytes,
) -> None:  # fmt: skip
    poison = poison if isinstance(poison, bytes) else orjson.dumps(poison)
    dead = RecordingDeadLetters()
    values = [orjson.dumps(event("1")), poison, orjson.dumps(event("2"))]
    async with start(values, dead_letters=dead) as run:
        await run.until_committed(3)
    assert await journaled_ids(journal) == ["1", "2"]
    [letter] = dead.sent
    assert letter["topic"] == "deployments.dlq"
    assert letter["value"] == poison
    headers = letter["headers"]
    assert headers["remediator-error-kind"] == kind
    assert (
        headers["remediator-error"].startswith(fragment) or fragment in headers["remediator-error"]
    )
    assert headers["remediator-original-offset"] == b"1"
    assert headers["remediator-original-topic"] == b"deployments"
    assert headers["remediator-failed-at"] == b"2026-11-27T09:00:00+00:00"
    assert run.partition.fetched == [0, 1, 2]  # no record was read twice


async def test_an_unexpected_error_mapping_one_record_ends_in_the_dlq_after_its_attempts(
    start: StartRun, journal: SqliteJournal, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bug in our own mapping, hit by one record only.
    real = kafka_ingress.signal_from_cloudevent

    def mapping(event: Mapping[str, Any], *, received_at: datetime, **options: Any) -> Any:
        if event.get("id") == "buggy":
            raise ZeroDivisionError("a bug in the mapping")
        return real(event, received_at=received_at, **options)

    monkeypatch.setattr(kafka_ingress, "signal_from_cloudevent", mapping)
    dead = RecordingDeadLetters()
    values = [orjson.dumps(event(i)) for i in ("1", "buggy", "2")]
    async with start(values, dead_letters=dead, max_delivery_attempts=3) as run:
        await run.until_committed(3)
    assert await journaled_ids(journal) == ["1", "2"]
    [letter] = dead.sent
    assert letter["headers"]["remediator-error-kind"] == b"failed"
    assert letter["headers"]["remediator-error"].startswith(b"failed 3 times: ZeroDivisionError")
    assert letter["headers"]["remediator-original-offset"] == b"1"
    assert run.partition.fetched.count(1) == 3  # tried max_delivery_attempts times
    assert run.partition.fetched.count(0) == 1  # what came before was committed once


async def test_a_record_the_journal_refuses_ends_in_the_dlq_and_the_next_is_journaled(
    start: StartRun, journal: SqliteJournal, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = journal.record_signals

    async def refusing(signals: Any) -> Any:
        if any(s.labels.get("revision") == "refused" for s in signals):
            raise InvalidInput("row too large", where="signal")
        return await real(signals)

    monkeypatch.setattr(journal, "record_signals", refusing)
    dead = RecordingDeadLetters()
    values = [orjson.dumps(event(i)) for i in ("1", "refused", "2")]
    async with start(values, dead_letters=dead, max_delivery_attempts=2) as run:
        await run.until_committed(3)
    assert await journaled_ids(journal) == ["1", "2"]
    [letter] = dead.sent
    assert letter["headers"]["remediator-error-kind"] == b"failed"
    assert b"row too large" in letter["headers"]["remediator-error"]


async def test_an_unexpected_error_in_a_batch_is_contained_counted_and_retried(
    start: StartRun, journal: SqliteJournal, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()
    intake_metrics = KafkaIntakeMetrics(
        CollectorRegistry(), internal_errors=metrics.internal_errors
    )
    dead = RecordingDeadLetters(fail_once=RuntimeError("dead-letter client bug: secret=abc"))
    values = [orjson.dumps(event("1")), b"not json", orjson.dumps(event("2"))]
    with caplog.at_level(logging.INFO, logger="remediator"):
        async with start(values, dead_letters=dead, metrics=intake_metrics) as run:
            await run.until_committed(3)
            assert not run.task.done()
    assert await journaled_ids(journal) == ["1", "2"]  # the retry stored nothing twice
    assert [d["headers"]["remediator-original-offset"] for d in dead.sent] == [b"1"]
    sample = metrics.registry.get_sample_value(
        "remediator_internal_errors_total", {"component": "kafka"}
    )
    assert sample == 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        "kafka: unexpected RuntimeError while handling a batch; it will be retried"
    ]
    assert not any("secret=abc" in r.getMessage() for r in caplog.records)


async def test_configured_limits_send_an_oversized_event_to_the_dlq_with_the_reason(
    start: StartRun, journal: SqliteJournal, no_error_logs: None
) -> None:
    limits = InputLimits(label_value_bytes=40, event_bytes=2048)
    big_label = orjson.dumps(event("big", data={"service": "checkout", "revision": "r" * 41}))
    big_event = orjson.dumps(event("huge", data={"service": "checkout", "pad": "p" * 2048}))
    dead = RecordingDeadLetters()
    values = [orjson.dumps(event("1")), big_label, big_event, orjson.dumps(event("2"))]
    async with start(values, dead_letters=dead, limits=limits) as run:
        await run.until_committed(4)
    assert await journaled_ids(journal) == ["1", "2"]
    errors = [letter["headers"]["remediator-error"] for letter in dead.sent]
    assert errors == [
        b"labels.revision: value is 41 bytes, limit 40",
        f"event is {len(big_event)} bytes, limit 2048".encode(),
    ]
    assert [letter["value"] for letter in dead.sent] == [big_label, big_event]


async def test_new_events_are_timed_into_the_journal_and_counted_by_known_type(
    start: StartRun, journal: SqliteJournal, no_error_logs: None
) -> None:
    metrics = Metrics()
    intake_metrics = KafkaIntakeMetrics(metrics.registry, journal_latency=metrics.journal_latency)
    invented = event("3", type="com.example.anything-1")
    values = [orjson.dumps(event("1")), orjson.dumps(event("1")), orjson.dumps(invented)]
    async with start(values, dead_letters=RecordingDeadLetters(), metrics=intake_metrics) as run:
        await run.until_committed(3)
    # The redelivery of "1" is a duplicate: journaled before, not timed again.
    assert metrics.registry.get_sample_value("remediator_journal_latency_seconds_count") == 2
    sample = metrics.registry.get_sample_value
    known = {"type": "io.remediator.deployment.succeeded"}
    assert sample("remediator_kafka_events_consumed_total", known) == 2
    assert sample("remediator_kafka_events_consumed_total", {"type": "other"}) == 1
    assert sample("remediator_kafka_events_duplicate_total") == 1
