"""CloudEvents (1.0, as JSON objects; the Kafka binding's modes are undone before,
in ``remediator.kafka_binding``) -> ``Signal``.

Event kinds use one naming: bare dotted names such as ``deployment.succeeded``,
``deployment.failed``, ``migration.failed``. Producers may prefix them with
``io.remediator.`` (the prefix is dropped). CDEvents are mapped onto the same names:
``dev.cdevents.service.deployed|upgraded.*`` -> ``deployment.succeeded``,
``dev.cdevents.service.rolledback.*`` -> ``deployment.rolledback``,
``dev.cdevents.service.removed.*`` -> ``deployment.removed``; other CDEvents become
``cdevents.<subject>.<predicate>``. The original type stays in label ``event_type``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import orjson

from remediator.domain.artifacts import purl_version
from remediator.domain.errors import InvalidInput
from remediator.domain.limits import InputLimits
from remediator.domain.rules.model import Defaults
from remediator.domain.rules.state import DeployRecord, MigrationRecord, MigrationStatus
from remediator.domain.signals import Signal, Source, Status, signal_time

SPECVERSION = "1.0"  # the only CloudEvents version there is a JSON format and binding for
NATIVE_PREFIX = "io.remediator."
CDEVENTS_PREFIX = "dev.cdevents."
_CDEVENT_KINDS = {
    ("service", "deployed"): "deployment.succeeded",
    ("service", "upgraded"): "deployment.succeeded",
    ("service", "rolledback"): "deployment.rolledback",
    ("service", "removed"): "deployment.removed",
}
# Scalar fields of native event data that become labels (rules match on them).
_NATIVE_FIELDS = (
    "service",
    "namespace",
    "version",
    "image",
    "revision",
    "previous_revision",
    "migration",
    "environment",
    "outcome",
    "reason",
    "strategy",
    "database",
    "actor",
    "previous_version",
)


def event_kind(cloudevent_type: str) -> str:
    """The kind rules match on, for a CloudEvents ``type``."""
    if cloudevent_type.startswith(NATIVE_PREFIX):
        return cloudevent_type.removeprefix(NATIVE_PREFIX)
    if cloudevent_type.startswith(CDEVENTS_PREFIX):
        parts = cloudevent_type.removeprefix(CDEVENTS_PREFIX).split(".")
        if len(parts) >= 2:
            subject, predicate = parts[0], parts[1]
            return _CDEVENT_KINDS.get((subject, predicate), f"cdevents.{subject}.{predicate}")
    return cloudevent_type


def signal_from_cloudevent(
    event: Mapping[str, Any], *, received_at: datetime, limits: InputLimits | None = None
) -> Signal:
    """Map one structured-mode CloudEvent to a ``Signal``; ``InvalidInput`` if it is not one
    or if what it maps to is past ``limits`` (default ``InputLimits()``).

    ``key`` is CloudEvents' own identity (``source`` + ``id``), so redeliveries dedupe.
    """
    limits = limits or InputLimits()
    for attribute in ("specversion", "id", "type", "source"):
        value = event.get(attribute)
        if not isinstance(value, str) or not value:
            raise InvalidInput("required CloudEvents attribute missing or empty", where=attribute)
    if event["specversion"] != SPECVERSION:
        raise InvalidInput(
            f"{event['specversion']!r} is not supported: remediator reads CloudEvents"
            f" {SPECVERSION} only",
            where="specversion",
        )
    ce_type, ce_source, ce_id = str(event["type"]), str(event["source"]), str(event["id"])
    data = _data(event)
    if ce_type.startswith(CDEVENTS_PREFIX):
        labels = _cdevent_labels(data)
    else:
        labels = {
            name: _text(data[name])
            for name in _NATIVE_FIELDS
            if name in data and data[name] is not None and not isinstance(data[name], dict | list)
        }
    if "service" not in labels and isinstance(event.get("subject"), str) and event["subject"]:
        labels["service"] = str(event["subject"])  # CloudEvents' subject names the service
    kind = event_kind(ce_type)
    labels["event_type"] = ce_type
    labels["event_source"] = ce_source
    annotations = {
        name: _text(data[name])
        for name in ("message", "error", "url")
        if isinstance(data.get(name), str | int | float)
    }
    limits.check_text(ce_id, where="id")
    limits.check_labels(labels, where="labels")
    limits.check_annotations(annotations, where="annotations")
    return Signal(
        key=f"ce\x1f{ce_source}\x1f{ce_id}",
        source=Source.KAFKA,
        kind=kind,
        status=Status.EVENT,
        service=labels.get("service") or None,
        namespace=labels.get("namespace") or None,
        labels=labels,
        annotations=annotations,
        starts_at=_time(event.get("time")),
        ends_at=None,
        received_at=received_at,
        raw=dict(event),
    )


def is_json_media_type(content_type: str) -> bool:
    """``application/json``, ``text/json`` or any ``+json`` type (parameters ignored)."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media in ("application/json", "text/json") or media.endswith("+json")


def _data(event: Mapping[str, Any]) -> Mapping[str, Any]:
    if "data_base64" in event:
        if "data" in event:
            raise InvalidInput("data and data_base64 exclude each other", where="data_base64")
        return _object(_base64_json(event["data_base64"], event.get("datacontenttype")),
                       where="data_base64")  # fmt: skip
    data = event.get("data")
    if isinstance(data, str):  # some producers put JSON text in data
        try:
            # orjson, like the record itself: it refuses lone surrogates (no journal could
            # store them) and deep nesting (json.loads raises RecursionError).
            data = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise InvalidInput("data is text but not JSON", where="data") from None
    return _object(data, where="data")


def _object(data: Any, *, where: str) -> Mapping[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise InvalidInput("data must be a JSON object", where=where)
    return data


def _base64_json(value: object, content_type: object) -> Any:
    """``data_base64`` (binary data in the JSON format): remediator reads JSON only."""
    if isinstance(content_type, str) and not is_json_media_type(content_type):
        raise InvalidInput(
            f"datacontenttype {content_type!r}: remediator reads JSON data only",
            where="data_base64",
        )
    if not isinstance(value, str):
        raise InvalidInput("must be base64 text", where="data_base64")
    try:
        return orjson.loads(base64.b64decode(value, validate=True))
    except binascii.Error:
        raise InvalidInput("not base64", where="data_base64") from None
    except orjson.JSONDecodeError:
        raise InvalidInput("does not hold JSON", where="data_base64") from None


def _cdevent_labels(data: Mapping[str, Any]) -> dict[str, str]:
    subject = data.get("subject") if isinstance(data.get("subject"), Mapping) else {}
    assert isinstance(subject, Mapping)
    content = subject.get("content") if isinstance(subject.get("content"), Mapping) else {}
    assert isinstance(content, Mapping)
    labels: dict[str, str] = {}
    subject_id = subject.get("id")
    if isinstance(subject_id, str) and subject_id:
        # CDEvents service ids are often paths such as "service/checkout".
        labels["service"] = subject_id.rstrip("/").rsplit("/", 1)[-1]
    environment = content.get("environment")
    if isinstance(environment, Mapping) and isinstance(environment.get("id"), str):
        labels["namespace"] = str(environment["id"]).rstrip("/").rsplit("/", 1)[-1]
    artifact = content.get("artifactId")
    if isinstance(artifact, str) and artifact:
        labels["artifact"] = artifact
        # pkg:oci/checkout@sha256%3Aab12?repository_url=... -> sha256:ab12
        version = purl_version(artifact, where="data.subject.content.artifactId")
        if version is not None:
            labels["version"] = version
    custom = data.get("customData")
    if isinstance(custom, Mapping):
        for name in _NATIVE_FIELDS:
            value = custom.get(name)
            if value is not None and not isinstance(value, dict | list):
                labels.setdefault(name, _text(value))
    return labels


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"not an RFC 3339 time: {value!r}", where="time") from None
    if parsed.tzinfo is None:
        raise InvalidInput(f"time needs a UTC offset: {value!r}", where="time")
    return signal_time(parsed, where="time")


DEPLOY_SUCCEEDED = "deployment.succeeded"
MIGRATION_KINDS = {
    "migration.failed": "failed",
    "migration.succeeded": "applied",
    "migration.applied": "applied",
    "migration.reverted": "reverted",
}
# Every kind that may become history, for the journal query that reads it.
HISTORY_KINDS = (DEPLOY_SUCCEEDED, *MIGRATION_KINDS)

# Event kinds remediator itself knows (docs/events.md), besides those the rules name.
_KNOWN_KINDS = (
    "deployment.started",
    "deployment.succeeded",
    "deployment.failed",
    "deployment.rolledback",
    "deployment.removed",
    "migration.started",
    *MIGRATION_KINDS,
)


def known_event_types(rule_kinds: Iterable[str] = ()) -> frozenset[str]:
    """The CloudEvents types (version suffix dropped) counted by name in metrics: the
    CDEvents remediator maps, and each known or rule-named kind, bare or with the
    ``io.remediator.`` prefix. Anything else a producer sends is counted as ``other``,
    so a producer cannot grow the label without bound."""
    kinds = {*_KNOWN_KINDS, *rule_kinds}
    cdevents = {f"{CDEVENTS_PREFIX}{subject}.{predicate}" for subject, predicate in _CDEVENT_KINDS}
    return frozenset({*kinds, *(NATIVE_PREFIX + kind for kind in kinds), *cdevents})


def history_trusted(signal: Signal, *, defaults: Defaults) -> bool:
    """Whether ``signal`` comes from a source trusted to say what a service runs.

    Only such signals become deploy and migration history, and only history chooses
    what to roll back or revert to. A signal's name proves nothing: an alert named
    ``deployment.succeeded`` is still an alert.
    """
    if signal.source not in defaults.trusted_history_sources:
        return False
    if signal.source is Source.KAFKA and defaults.trusted_event_sources:
        return signal.labels.get("event_source") in defaults.trusted_event_sources
    return True


def deploy_record_from_signal(signal: Signal, *, defaults: Defaults) -> DeployRecord | None:
    """The deploy a trusted ``deployment.succeeded`` event reports, for the service's history.

    ``healthy`` stays unknown: only the engine's later verification may mark it healthy,
    and only healthy revisions are ever rollback targets.
    """
    revision = signal.labels.get("revision") or signal.labels.get("version")
    if signal.kind != DEPLOY_SUCCEEDED or not revision:
        return None
    if not history_trusted(signal, defaults=defaults):
        return None
    return DeployRecord(
        revision=revision,
        version=signal.labels.get("version"),
        image=signal.labels.get("image") or signal.labels.get("artifact"),
        finished_at=signal.starts_at or signal.received_at,
        previous_revision=signal.labels.get("previous_revision"),
    )


def migration_record_from_signal(signal: Signal, *, defaults: Defaults) -> MigrationRecord | None:
    """The migration outcome a trusted ``migration.*`` event reports, for the history."""
    status = MIGRATION_KINDS.get(signal.kind)
    migration = signal.labels.get("migration")
    if status is None or not migration or not history_trusted(signal, defaults=defaults):
        return None
    return MigrationRecord(
        id=migration,
        status=MigrationStatus(status),
        at=signal.starts_at or signal.received_at,
        version=signal.labels.get("version"),
    )
