"""CloudEvents from Kafka -> Signal: native names, the io.remediator. prefix, CDEvents."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from remediator.domain.errors import InvalidInput
from remediator.domain.rules import (
    Defaults,
    MigrationStatus,
    deploy_record_from_signal,
    migration_record_from_signal,
    signal_from_cloudevent,
)
from remediator.domain.rules.events import event_kind
from remediator.domain.signals import Source, Status

RECEIVED = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
DEFAULTS = Defaults()


def cloudevent(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "specversion": "1.0",
        "id": "evt-1",
        "type": "io.remediator.migration.failed",
        "source": "ci/deployer",
        "time": "2026-11-27T08:59:00Z",
        "data": {
            "service": "checkout",
            "namespace": "shop",
            "migration": "042_add_index",
            "version": "v1.4.0",
            "error": "duplicate key value",
        },
    }
    return {**base, **changes}


@pytest.mark.parametrize(
    ("ce_type", "kind"),
    [
        ("io.remediator.migration.failed", "migration.failed"),
        ("migration.failed", "migration.failed"),
        ("deployment.succeeded", "deployment.succeeded"),
        ("io.remediator.deployment.failed", "deployment.failed"),
        ("dev.cdevents.service.deployed.0.2.0", "deployment.succeeded"),
        ("dev.cdevents.service.upgraded.0.1.1", "deployment.succeeded"),
        ("dev.cdevents.service.rolledback.0.1.1", "deployment.rolledback"),
        ("dev.cdevents.service.removed.0.1.1", "deployment.removed"),
        ("dev.cdevents.testcaserun.finished.0.1.0", "cdevents.testcaserun.finished"),
    ],
)
def test_event_kinds(ce_type: str, kind: str) -> None:
    assert event_kind(ce_type) == kind


def test_native_event() -> None:
    signal = signal_from_cloudevent(cloudevent(), received_at=RECEIVED)
    assert (signal.source, signal.kind, signal.status) == (
        Source.KAFKA,
        "migration.failed",
        Status.EVENT,
    )
    assert (signal.service, signal.namespace) == ("checkout", "shop")
    assert signal.labels["migration"] == "042_add_index"
    assert signal.labels["event_type"] == "io.remediator.migration.failed"
    assert signal.annotations == {"error": "duplicate key value"}
    assert signal.starts_at == datetime(2026, 11, 27, 8, 59, tzinfo=UTC)
    assert signal.received_at == RECEIVED


def test_redelivery_shares_the_key_and_id() -> None:
    first = signal_from_cloudevent(cloudevent(), received_at=RECEIVED)
    again = signal_from_cloudevent(cloudevent(), received_at=datetime.now(UTC))
    other = signal_from_cloudevent(cloudevent(id="evt-2"), received_at=RECEIVED)
    assert first.id == again.id != other.id


def test_cdevent_service_deployed() -> None:
    data = {
        "context": {
            "version": "0.4.1",
            "id": "x",
            "source": "argocd",
            "type": "dev.cdevents.service.deployed.0.2.0",
        },
        "subject": {
            "id": "service/checkout",
            "content": {
                "environment": {"id": "shop"},
                "artifactId": "pkg:oci/checkout@v1.4.0?repository_url=registry/checkout",
            },
        },
    }
    signal = signal_from_cloudevent(
        cloudevent(type="dev.cdevents.service.deployed.0.2.0", data=data), received_at=RECEIVED
    )
    assert signal.kind == "deployment.succeeded"
    assert (signal.service, signal.namespace) == ("checkout", "shop")
    assert signal.labels["version"] == "v1.4.0"


def test_subject_attribute_names_the_service_when_data_does_not() -> None:
    signal = signal_from_cloudevent(
        cloudevent(subject="checkout", data={"revision": 8, "healthy": True}), received_at=RECEIVED
    )
    assert signal.service == "checkout"
    assert signal.labels["revision"] == "8"


def test_data_as_json_text_and_missing_data() -> None:
    text = signal_from_cloudevent(cloudevent(data='{"service": "web"}'), received_at=RECEIVED)
    assert text.service == "web"
    empty = signal_from_cloudevent(cloudevent(data=None, time=None), received_at=RECEIVED)
    assert empty.service is None
    assert empty.starts_at is None


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"id": ""}, "id"),
        ({"type": None}, "type"),
        ({"specversion": 1}, "specversion"),
        ({"data": [1]}, "data"),
        ({"data": "{not json"}, "data"),
        ({"time": "yesterday"}, "time"),
        ({"time": "2026-11-27T08:59:00"}, "time"),
    ],
)
def test_invalid_events(changes: dict[str, Any], where: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        signal_from_cloudevent(cloudevent(**changes), received_at=RECEIVED)
    assert caught.value.where == where


def test_deploy_and_migration_records_from_events() -> None:
    deployed = signal_from_cloudevent(
        cloudevent(
            type="deployment.succeeded",
            data={
                "service": "checkout",
                "revision": "9",
                "version": "v1.5.0",
                "previous_revision": "8",
            },
        ),
        received_at=RECEIVED,
    )
    record = deploy_record_from_signal(deployed, defaults=DEFAULTS)
    assert record is not None
    assert (record.revision, record.version, record.previous_revision, record.healthy) == (
        "9",
        "v1.5.0",
        "8",
        None,
    )
    assert record.finished_at == datetime(2026, 11, 27, 8, 59, tzinfo=UTC)
    failed = migration_record_from_signal(
        signal_from_cloudevent(cloudevent(), received_at=RECEIVED), defaults=DEFAULTS
    )
    assert failed is not None
    assert (failed.id, failed.status, failed.version) == (
        "042_add_index",
        MigrationStatus.FAILED,
        "v1.4.0",
    )
    assert migration_record_from_signal(deployed, defaults=DEFAULTS) is None
    assert (
        deploy_record_from_signal(
            signal_from_cloudevent(cloudevent(), received_at=RECEIVED), defaults=DEFAULTS
        )
        is None
    )
