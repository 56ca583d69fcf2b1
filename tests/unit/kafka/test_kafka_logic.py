"""Pure parts of the Kafka side: record parsing, DLQ headers, client kwargs, the relay."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from remediator import kafka_binding
from remediator.connectors.kafka import kafka_channel
from remediator.domain.errors import TemporaryError
from remediator.domain.rules.events import known_event_types
from remediator.domain.signals import Signal
from remediator.engine.outbox import OutboxRelay
from remediator.ingress.kafka import (
    Poison,
    dead_letter_headers,
    event_type_label,
    parse_record,
)
from remediator.kafka_config import client_kwargs
from remediator.ports import OutboxMessage, PendingMessage
from remediator.settings import KafkaSettings

NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)


def event(**changes: Any) -> dict[str, Any]:
    base = {
        "specversion": "1.0", "id": "e-1", "source": "ci/deployer",
        "type": "io.remediator.deployment.succeeded", "time": "2026-11-27T08:59:00Z",
        "data": {"service": "checkout", "namespace": "shop", "revision": "8"},
    }  # fmt: skip
    return {**base, **changes}


def test_a_valid_event_becomes_a_signal_keyed_by_source_and_id() -> None:
    signal = parse_record(orjson.dumps(event()), received_at=NOW)
    assert isinstance(signal, Signal)
    assert signal.key == "ce\x1fci/deployer\x1fe-1"
    assert signal.kind == "deployment.succeeded"
    assert signal.labels["revision"] == "8"


@pytest.mark.parametrize(
    ("value", "kind", "fragment"),
    [
        (None, "unparseable", "empty"),
        (b"", "unparseable", "empty"),
        (b"{not json", "unparseable", "not JSON"),
        (b"[1, 2]", "unparseable", "not a JSON object"),
        (orjson.dumps(event(id="")), "invalid", "id"),
        (orjson.dumps(event(time="2026-11-27T08:59:00")), "invalid", "UTC offset"),
        (orjson.dumps(event(data=[1])), "invalid", "data"),
    ],
)
def test_poison_is_classified(value: bytes | None, kind: str, fragment: str) -> None:
    poison = parse_record(value, received_at=NOW)
    assert isinstance(poison, Poison)
    assert poison.kind == kind
    assert fragment in poison.error


def test_dead_letter_headers_name_the_error_and_the_origin() -> None:
    headers = dead_letter_headers(
        poison=Poison(kind="invalid", error="x" * 5000), topic="deployments", partition=2,
        offset=41, failed_at=datetime(2026, 11, 27, 10, 0, tzinfo=UTC),
    )  # fmt: skip
    assert all(isinstance(k, str) and isinstance(v, bytes) for k, v in headers)
    by_name = dict(headers)
    assert by_name["remediator-original-topic"] == b"deployments"
    assert by_name["remediator-original-partition"] == b"2"
    assert by_name["remediator-original-offset"] == b"41"
    assert by_name["remediator-failed-at"] == b"2026-11-27T10:00:00+00:00"
    assert by_name["remediator-error-kind"] == b"invalid"
    assert len(by_name["remediator-error"]) == 1000


def test_metric_label_drops_the_cdevents_version() -> None:
    cd = event(type="dev.cdevents.service.deployed.0.2.0", data={"subject": {"id": "service/a"}})
    signal = parse_record(orjson.dumps(cd), received_at=NOW)
    assert isinstance(signal, Signal)
    assert event_type_label(signal) == "dev.cdevents.service.deployed"


@pytest.mark.parametrize(
    ("ce_type", "label"),
    [
        ("dev.cdevents.service.upgraded.0.3.0", "dev.cdevents.service.upgraded"),
        ("io.remediator.migration.failed", "io.remediator.migration.failed"),
        ("deployment.succeeded", "deployment.succeeded"),
        # Whatever else a producer sends is one label, however many types it invents.
        ("dev.cdevents.pipelinerun.finished.0.2.0", "other"),
        ("io.remediator.deployment.succeeded.attacker-chosen-1", "other"),
        ("com.example.build-42", "other"),
    ],
)
def test_metric_label_names_known_types_only(ce_type: str, label: str) -> None:
    signal = parse_record(orjson.dumps(event(type=ce_type)), received_at=NOW)
    assert isinstance(signal, Signal)
    assert event_type_label(signal) == label


def test_types_the_rules_name_are_known_too() -> None:
    signal = parse_record(orjson.dumps(event(type="io.remediator.canary.aborted")), received_at=NOW)
    assert isinstance(signal, Signal)
    assert event_type_label(signal) == "other"
    known = known_event_types(["canary.aborted"])
    assert event_type_label(signal, known) == "io.remediator.canary.aborted"


def test_client_kwargs_plaintext() -> None:
    kwargs = client_kwargs(KafkaSettings(bootstrap_servers="a:9092, b:9092"))
    assert kwargs == {
        "bootstrap_servers": ["a:9092", "b:9092"],
        "client_id": "remediator",
        "security_protocol": "PLAINTEXT",
    }


def test_client_kwargs_sasl_scram_over_tls() -> None:
    settings = KafkaSettings(
        bootstrap_servers=("k:9093",), security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512", sasl_username="svc", sasl_password=SecretStr("pw"),
    )  # fmt: skip
    kwargs = client_kwargs(settings)
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "svc"
    assert kwargs["sasl_plain_password"] == "pw"
    assert kwargs["ssl_context"].check_hostname is True  # TLS verifies the broker


def test_outcome_records_are_structured_mode_without_ce_headers() -> None:
    payload = {"specversion": "1.0", "id": "r:planned", "type": "t", "source": "/remediator"}
    value, headers = kafka_binding.encode(payload)
    # Any ce_* header makes a record binary mode to the binding (and to the SDK's from_kafka).
    assert headers == [("content-type", b"application/cloudevents+json")]
    assert orjson.loads(value) == payload
    assert kafka_binding.decode(value, headers) == payload
    assert kafka_channel("remediator.outcomes") == "kafka:remediator.outcomes"


def test_a_record_is_recognised_by_its_id_in_either_mode() -> None:
    value = orjson.dumps({"specversion": "1.0", "id": "from-value"})
    structured = [("content-type", b"application/cloudevents+json")]
    assert kafka_binding.event_id(value, structured) == "from-value"
    # What earlier versions published: structured, with ce_* headers beside.
    assert kafka_binding.event_id(value, [*structured, ("ce_id", b"from-value")]) == "from-value"
    binary = [("ce_specversion", b"1.0"), ("ce_id", b"from-header")]
    assert kafka_binding.event_id(b"{}", binary) == "from-header"
    assert kafka_binding.event_id(b"not json", []) is None
    assert kafka_binding.event_id(orjson.dumps([1, 2]), []) is None
    assert kafka_binding.event_id(orjson.dumps({"id": 7}), []) is None
    assert kafka_binding.event_id(None, []) is None


# -- outbox relay ----------------------------------------------------------------------
def outbox_message(n: int) -> OutboxMessage:
    return OutboxMessage(id=f"m{n}", channel="kafka:t", key="checkout", payload={"n": n},
                         created_at=NOW)  # fmt: skip


class FakeJournal:
    def __init__(self, count: int) -> None:
        self.unpublished = [outbox_message(n) for n in range(count)]
        self.published: list[str] = []
        self.failed: list[tuple[list[str], str]] = []

    async def pending(
        self, *, channel: str, limit: int, holder: str, at: datetime, lease_seconds: float
    ) -> list[PendingMessage]:
        assert (channel, holder) == ("kafka:t", "replica-1")
        return [PendingMessage(seq=i, message=m, attempts=0, maybe_sent=False)
                for i, m in enumerate(self.unpublished[:limit])]  # fmt: skip

    async def renew_lease(
        self, *, channel: str, ids: Sequence[str], holder: str, at: datetime,
        lease_seconds: float,
    ) -> bool:  # fmt: skip
        return True

    async def mark_published(self, *, ids: Sequence[str], at: datetime) -> None:
        self.published += ids
        self.unpublished = [m for m in self.unpublished if m.id not in ids]

    async def mark_failed_attempt(
        self, *, ids: Sequence[str], error: str, holder: str | None = None
    ) -> None:
        assert holder == "replica-1"  # only its own lease is released
        self.failed.append((list(ids), error))

    async def outbox_backlog(self) -> dict[str, int]:
        return {"kafka:t": len(self.unpublished)} if self.unpublished else {}


class FakePublisher:
    channel = "kafka:t"

    def __init__(self, *, failures: int = 0) -> None:
        self.failures = failures
        self.batches: list[list[str]] = []

    async def publish(self, messages: Sequence[OutboxMessage]) -> None:
        if self.failures:
            self.failures -= 1
            raise TemporaryError("broker down", delay=0.5)
        self.batches.append([m.id for m in messages])

    async def already_published(self, messages: Sequence[OutboxMessage]) -> set[str]:
        raise AssertionError("no message was taken before: nothing to look up")


async def test_relay_publishes_in_batches_and_marks_after_the_ack() -> None:
    journal, publisher = FakeJournal(5), FakePublisher()
    relay = OutboxRelay(journal=journal, publisher=publisher,  # type: ignore[arg-type]
                        holder="replica-1", batch_size=2, clock=lambda: NOW)  # fmt: skip
    assert [await relay.run_once() for _ in range(4)] == [2, 2, 1, 0]
    assert publisher.batches == [["m0", "m1"], ["m2", "m3"], ["m4"]]
    assert journal.published == ["m0", "m1", "m2", "m3", "m4"]


async def test_relay_failure_marks_an_attempt_and_publishes_nothing() -> None:
    journal, publisher = FakeJournal(2), FakePublisher(failures=1)
    relay = OutboxRelay(journal=journal, publisher=publisher, holder="replica-1")  # type: ignore[arg-type]
    with pytest.raises(TemporaryError):
        await relay.run_once()
    assert journal.published == []
    assert journal.failed == [(["m0", "m1"], "broker down")]


async def test_relay_backs_off_exponentially_up_to_the_cap() -> None:
    journal, publisher = FakeJournal(1), FakePublisher(failures=5)
    delays: list[float] = []
    done = asyncio.Event()

    async def sleep(delay: float) -> None:
        delays.append(delay)

    relay = OutboxRelay(
        journal=journal, publisher=publisher, holder="replica-1", sleep=sleep,  # type: ignore[arg-type]
        max_backoff_seconds=3.0,
        poll_seconds=0.01,
    )  # fmt: skip

    async def until_published() -> None:
        while not journal.published:
            await asyncio.sleep(0.01)
        done.set()

    task = asyncio.create_task(relay.run())
    try:
        await asyncio.wait_for(until_published(), 5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert journal.published == ["m0"]
