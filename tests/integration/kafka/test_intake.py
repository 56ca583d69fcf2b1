"""KafkaIntake against the real broker: journaled, decided, deduplicated, dead-lettered."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from remediator.domain.errors import PermanentError, TemporaryError
from remediator.domain.rules import RulePack
from remediator.domain.signals import Signal
from remediator.engine.decider import DecisionEngine, UnknownFacts
from remediator.ingress.kafka import KafkaIntake, KafkaIntakeMetrics
from remediator.journal.sqlite import SqliteJournal
from remediator.ports import RecordResult
from remediator.settings import KafkaSettings
from tests.integration.kafka.conftest import (
    committed_offsets,
    create_topic,
    kafka_signals,
    native,
    produce,
    read_topic,
    settings_for,
    unique,
)
from tests.polling import eventually

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def running(intake: KafkaIntake, *extra: Any) -> AsyncIterator[KafkaIntake]:
    """Run the intake (and e.g. an engine's run) as tasks; drain like the runtime does."""
    tasks = [asyncio.create_task(intake.run(), name="kafka-intake")]
    tasks += [asyncio.create_task(fn()) for fn in extra]
    try:
        async with asyncio.timeout(60):
            await intake.started.wait()
        yield intake
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await intake.close()


def new_intake(settings: KafkaSettings, journal: Any, **kwargs: Any) -> KafkaIntake:
    kwargs.setdefault("on_new_signals", lambda stored: None)
    return KafkaIntake(settings=settings, journal=journal, poll_timeout_ms=200, **kwargs)


async def test_events_are_journaled_decided_and_committed(
    bootstrap: str, journal: SqliteJournal, pack: RulePack
) -> None:
    topic = unique("deployments")
    settings = settings_for(bootstrap, topic)
    cdevent = {
        "specversion": "1.0", "id": "cd-1", "source": "argocd/prod",
        "type": "dev.cdevents.service.deployed.0.2.0", "time": "2026-11-27T08:00:00Z",
        "data": {"subject": {"id": "service/checkout", "content": {
            "environment": {"id": "shop"}, "artifactId": "pkg:oci/checkout@v1.3.0"}}},
    }  # fmt: skip
    await produce(bootstrap, topic, [
        cdevent,
        native("deployment.succeeded", id="d-2", revision="8", version="v1.4.0"),
        native("migration.failed", id="m-1", migration="042_add_index", version="v1.4.0"),
    ])  # fmt: skip
    engine = DecisionEngine(journal=journal, pack=pack, facts=UnknownFacts(), dry_run=False)
    registry = CollectorRegistry()
    intake = new_intake(
        settings, journal, on_new_signals=engine.journaled, metrics=KafkaIntakeMetrics(registry)
    )
    async with running(intake, engine.run):
        signals = await eventually(
            lambda: kafka_signals(journal), lambda s: len(s) == 3, what="3 journaled events"
        )
        rems = await eventually(
            lambda: journal.list_remediations(limit=10),
            lambda page: len(page.items) == 1,
            what="the migration.failed decision",
        )
        offsets = await eventually(
            lambda: committed_offsets(bootstrap, settings.group_id),
            lambda o: o.get(TopicPartition(topic, 0)) == 3,
            what="offset 3 committed",
        )
    assert {s["kind"] for s in signals} == {"deployment.succeeded", "migration.failed"}
    [rem] = rems.items
    assert rem.service == "checkout" and rem.rule == "migration-failed-revert"
    assert offsets == {TopicPartition(topic, 0): 3}
    consumed = registry.get_sample_value(
        "remediator_kafka_events_consumed_total", {"type": "dev.cdevents.service.deployed"}
    )
    assert consumed == 1


async def test_an_event_delivered_twice_has_one_effect(
    bootstrap: str, journal: SqliteJournal, pack: RulePack
) -> None:
    topic = unique("deployments")
    settings = settings_for(bootstrap, topic)
    event = native("migration.failed", id="m-twice", migration="043", version="v2")
    await produce(bootstrap, topic, [event, event])
    engine = DecisionEngine(journal=journal, pack=pack, facts=UnknownFacts(), dry_run=False)
    registry = CollectorRegistry()
    intake = new_intake(
        settings, journal, on_new_signals=engine.journaled, metrics=KafkaIntakeMetrics(registry)
    )
    async with running(intake, engine.run):
        await eventually(
            lambda: committed_offsets(bootstrap, settings.group_id),
            lambda o: o.get(TopicPartition(topic, 0)) == 2,
            what="both deliveries committed",
        )
        await eventually(
            lambda: journal.undecided_signals(limit=10), lambda s: not s.signals, what="decided"
        )
    # The same event again later (a producer retry, a replay) is still one effect.
    await produce(bootstrap, topic, [event])
    intake = new_intake(settings, journal, metrics=KafkaIntakeMetrics(CollectorRegistry()))
    async with running(intake):
        await eventually(
            lambda: committed_offsets(bootstrap, settings.group_id),
            lambda o: o.get(TopicPartition(topic, 0)) == 3,
            what="the replay committed",
        )
    assert len(await kafka_signals(journal)) == 1
    assert len((await journal.list_remediations(limit=10)).items) == 1
    assert registry.get_sample_value("remediator_kafka_events_duplicate_total") == 1


async def test_poison_messages_go_to_the_dlq_and_the_partition_moves_on(
    bootstrap: str, journal: SqliteJournal
) -> None:
    topic = unique("deployments")
    settings = settings_for(bootstrap, topic)
    no_id = native("deployment.succeeded", id="x")
    del no_id["id"]
    bad_time = native("deployment.succeeded", id="bad-time")
    bad_time["time"] = "yesterday"
    await produce(bootstrap, topic, [
        b"\x00not json", no_id, bad_time, native("deployment.succeeded", id="good", revision="9"),
    ])  # fmt: skip
    registry = CollectorRegistry()
    intake = new_intake(settings, journal, metrics=KafkaIntakeMetrics(registry))
    async with running(intake):
        await eventually(
            lambda: committed_offsets(bootstrap, settings.group_id),
            lambda o: o.get(TopicPartition(topic, 0)) == 4,
            what="all four committed",
        )
    [good] = await kafka_signals(journal)
    assert good["labels"]["revision"] == "9"
    dead = await read_topic(bootstrap, f"{topic}.dlq", at_least=3, settle=0.5)
    assert dead[0].value == b"\x00not json"
    assert all(r.key == b"checkout" for r in dead)
    headers = [dict(r.headers) for r in dead]
    assert [h["remediator-original-offset"] for h in headers] == [b"0", b"1", b"2"]
    assert {h["remediator-original-topic"] for h in headers} == {topic.encode()}
    assert {h["remediator-original-partition"] for h in headers} == {b"0"}
    assert [h["remediator-error-kind"] for h in headers] == [b"unparseable", b"invalid", b"invalid"]
    assert b"id" in headers[1]["remediator-error"]
    assert b"RFC 3339" in headers[2]["remediator-error"]
    assert all(h["remediator-failed-at"].endswith(b"+00:00") for h in headers)
    assert (
        registry.get_sample_value(
            "remediator_kafka_dead_lettered_total", {"topic": topic, "kind": "invalid"}
        )
        == 2
    )


class FlakyJournal:
    """Delegates to a real journal; fails record_signals as scripted."""

    def __init__(self, inner: SqliteJournal, *, outages: int = 0, refuse: str | None = None):
        self.inner = inner
        self.outages = outages
        self.refuse = refuse  # a CloudEvents id the journal always refuses (PermanentError)
        self.calls = 0

    async def record_signals(self, signals: Sequence[Signal]) -> list[RecordResult]:
        self.calls += 1
        if self.outages > 0:
            self.outages -= 1
            raise TemporaryError("database is locked", delay=0.1)
        if self.refuse is not None and any(s.key.endswith(self.refuse) for s in signals):
            raise PermanentError("row too large")
        return await self.inner.record_signals(signals)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_a_journal_outage_pauses_and_retries_without_committing(
    bootstrap: str, journal: SqliteJournal
) -> None:
    topic = unique("deployments")
    settings = settings_for(bootstrap, topic)
    await produce(bootstrap, topic, [native("deployment.succeeded", id=f"o-{i}") for i in range(5)])
    flaky = FlakyJournal(journal, outages=3)
    seen: list[tuple[float, dict[TopicPartition, int], int]] = []

    async def sleep(delay: float) -> None:
        # While the journal is down nothing may be committed, nor journaled.
        offsets = await committed_offsets(bootstrap, settings.group_id)
        seen.append((delay, offsets, len(await kafka_signals(journal))))
        await asyncio.sleep(0.05)

    intake = new_intake(settings, flaky, sleep=sleep)
    async with running(intake):
        await eventually(
            lambda: committed_offsets(bootstrap, settings.group_id),
            lambda o: o.get(TopicPartition(topic, 0)) == 5,
            what="committed after the outage",
        )
    assert len(seen) == 3
    assert all(offsets.get(TopicPartition(topic, 0), -1) in (-1, 0) for _, offsets, _ in seen)
    assert all(count == 0 for _, _, count in seen)
    delays = [d for d, _, _ in seen]
    assert delays == sorted(delays) and delays[0] >= 0.1  # backs off
    assert len(await kafka_signals(journal)) == 5


async def test_a_record_failing_max_attempts_times_is_dead_lettered(
    bootstrap: str, journal: SqliteJournal
) -> None:
    topic = unique("deployments")
    settings = settings_for(bootstrap, topic, max_delivery_attempts=3)
    await produce(bootstrap, topic, [
        native("deployment.succeeded", id="before"),
        native("deployment.succeeded", id="refused"),
        native("deployment.succeeded", id="after"),
    ])  # fmt: skip
    flaky = FlakyJournal(journal, refuse="refused")
    intake = new_intake(settings, flaky)
    async with running(intake):
        await eventually(
            lambda: committed_offsets(bootstrap, settings.group_id),
            lambda o: o.get(TopicPartition(topic, 0)) == 3,
            what="the partition moved past the refused record",
        )
    journaled = await kafka_signals(journal)
    assert len(journaled) == 2
    [dead] = await read_topic(bootstrap, f"{topic}.dlq", at_least=1, settle=0.5)
    headers = dict(dead.headers)
    assert headers["remediator-error-kind"] == b"failed"
    assert headers["remediator-error"].startswith(b"failed 3 times")
    assert headers["remediator-original-offset"] == b"1"


async def test_two_consumers_share_partitions_and_hand_over_on_stop(
    bootstrap: str, journal: SqliteJournal
) -> None:
    topic = unique("deployments")
    await create_topic(bootstrap, topic, partitions=2)
    settings = settings_for(bootstrap, topic)
    first = [native("deployment.succeeded", id=f"a-{i}", service=f"s{i}") for i in range(20)]
    for i, event in enumerate(first):
        await produce(bootstrap, topic, [event], key=None, partition=i % 2)
    one, two = new_intake(settings, journal), new_intake(settings, journal)
    async with running(one):
        async with running(two):
            await eventually(
                lambda: kafka_signals(journal), lambda s: len(s) == 20, what="20 events"
            )
            await eventually(
                lambda: asyncio.sleep(0, result=(one.assignment, two.assignment)),
                lambda a: len(a[0]) == 1 and len(a[1]) == 1,
                what="one partition each",
            )
        # `two` has stopped (left the group): `one` takes both partitions over.
        await eventually(
            lambda: asyncio.sleep(0, result=one.assignment),
            lambda a: len(a) == 2,
            what="both partitions on the survivor",
        )
        second = [native("deployment.succeeded", id=f"b-{i}", service=f"s{i}") for i in range(20)]
        for i, event in enumerate(second):
            await produce(bootstrap, topic, [event], key=None, partition=i % 2)
        await eventually(lambda: kafka_signals(journal), lambda s: len(s) == 40, what="40 events")
        await eventually(
            lambda: committed_offsets(bootstrap, settings.group_id),
            lambda o: o == {TopicPartition(topic, 0): 20, TopicPartition(topic, 1): 20},
            what="all committed",
        )
