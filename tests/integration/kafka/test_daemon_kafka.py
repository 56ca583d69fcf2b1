"""The daemon as a process with Kafka: SIGKILL mid-stream, and two daemons in one group."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from tests.e2e.daemon import Daemon
from tests.integration.kafka.conftest import committed_offsets, create_topic, native, unique

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
T = TypeVar("T")


def wait_for(probe: Callable[[], T], done: Callable[[T], bool], *, timeout: float = 90,
             what: str) -> T:  # fmt: skip
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last value: {value!r}")
        time.sleep(0.2)


def kafka_daemon(workdir: Path, bootstrap: str, topic: str, group: str) -> Daemon:
    return Daemon(workdir, extra_env={
        "REMEDIATOR_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "REMEDIATOR_KAFKA__DEPLOY_TOPICS": topic,
        "REMEDIATOR_KAFKA__GROUP_ID": group,
        "REMEDIATOR_KAFKA__OUTCOME_TOPIC": f"{topic}.outcomes",
    })  # fmt: skip


def produce_many(
    bootstrap: str, topic: str, events: list[tuple[int | None, dict[str, Any]]]
) -> None:
    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
        await producer.start()
        try:
            acks = [
                await producer.send(topic, orjson.dumps(e), key=b"k", partition=p)
                for p, e in events
            ]
            await asyncio.gather(*acks)
        finally:
            await producer.stop()

    asyncio.run(run())


def committed(bootstrap: str, group: str) -> dict[TopicPartition, int]:
    return asyncio.run(committed_offsets(bootstrap, group))


def event_ids(daemon: Daemon) -> list[str]:
    # The journal's signal id is derived from the CloudEvents source + id: one per event.
    return [s["id"] for s in daemon.signals() if s["source"] == "kafka"]


def remediation_signals(daemon: Daemon) -> list[str]:
    status, page = daemon.get("/api/v1/remediations?limit=1000")
    assert status == 200, page
    return [r["signal_id"] for r in page["items"]]


def assigned(daemon: Daemon) -> str:
    """The daemon's latest 'kafka: assigned ...' log line."""
    lines = re.findall(r"kafka: assigned (.*)", daemon.log_path.read_text())
    return lines[-1] if lines else ""


def test_sigkill_mid_stream_then_restart_loses_nothing_and_repeats_nothing(
    kafka: Any, tmp_path: Path
) -> None:
    bootstrap = kafka.endpoints["kafka_bootstrap"]
    topic, group = unique("deployments"), unique("group")
    total, failures = 6000, 30
    events: list[tuple[int | None, dict[str, Any]]] = []
    for i in range(total):
        if i % (total // failures) == 0:
            events.append((None, native("migration.failed", id=f"m-{i}", migration=f"m{i}")))
        else:
            events.append((None, native("deployment.succeeded", id=f"d-{i}", service=f"svc{i % 7}",
                                        revision=str(i))))  # fmt: skip
    produce_many(bootstrap, topic, events)

    daemon = kafka_daemon(tmp_path / "d", bootstrap, topic, group)
    daemon.start()
    try:
        consumed = wait_for(
            lambda: daemon.metric("remediator_kafka_events_consumed_total"),
            lambda n: n > 0, timeout=60, what="consumption to begin",
        )  # fmt: skip
        daemon.stop(signal.SIGKILL)
        at_kill = committed(bootstrap, group).get(TopicPartition(topic, 0), 0)
        print(f"SIGKILL after {consumed:.0f} consumed, offset {at_kill} committed of {total}")
        assert at_kill < total, "the kill came too late to test anything"

        daemon.start()
        wait_for(
            lambda: committed(bootstrap, group).get(TopicPartition(topic, 0)),
            lambda o: o == total, timeout=120, what="every offset committed after restart",
        )  # fmt: skip
        ids = wait_for(lambda: event_ids(daemon), lambda s: len(s) >= total, what="all journaled")
        assert len(ids) == len(set(ids)) == total
        rems = wait_for(
            lambda: remediation_signals(daemon), lambda r: len(r) >= failures,
            what="every migration.failed decided",
        )  # fmt: skip
        time.sleep(1)  # would a repeated delivery add a decision? give it the chance
        rems = remediation_signals(daemon)
        assert len(rems) == len(set(rems)) == failures
    finally:
        if daemon.proc is not None:
            assert daemon.stop() == 0


def test_two_daemons_share_the_partitions_and_hand_over_on_stop(kafka: Any, tmp_path: Path) -> None:
    bootstrap = kafka.endpoints["kafka_bootstrap"]
    topic, group = unique("deployments"), unique("group")
    asyncio.run(create_topic(bootstrap, topic, partitions=2))
    one = kafka_daemon(tmp_path / "one", bootstrap, topic, group)
    two = kafka_daemon(tmp_path / "two", bootstrap, topic, group)
    one.start()
    two.start()
    try:
        wait_for(
            lambda: (assigned(one), assigned(two)),
            lambda a: all(re.fullmatch(rf"{topic}\[\d\]", x) for x in a) and a[0] != a[1],
            what="one partition each",
        )
        first = [(i % 2, native("deployment.succeeded", id=f"a-{i}")) for i in range(200)]
        produce_many(bootstrap, topic, first)
        wait_for(
            lambda: len(event_ids(one)) + len(event_ids(two)), lambda n: n == 200,
            what="the first 200 events",
        )  # fmt: skip
        ids_one = set(event_ids(one))
        assert len(ids_one) == len(event_ids(two)) == 100

        assert one.stop() == 0  # SIGTERM: commits, leaves the group
        wait_for(lambda: assigned(two), lambda a: a.count(topic) == 2, what="both on two")
        second = [(i % 2, native("deployment.succeeded", id=f"b-{i}")) for i in range(200)]
        produce_many(bootstrap, topic, second)
        wait_for(lambda: len(event_ids(two)), lambda n: n == 300, what="the second 200 on two")
        wait_for(
            lambda: committed(bootstrap, group),
            lambda o: o == {TopicPartition(topic, 0): 200, TopicPartition(topic, 1): 200},
            what="all 400 committed",
        )
        ids_two = set(event_ids(two))
        assert not ids_one & ids_two  # the handover repeated nothing
        assert len(ids_one | ids_two) == 400  # and lost nothing
    finally:
        for daemon in (one, two):
            if daemon.proc is not None:
                assert daemon.stop() == 0
