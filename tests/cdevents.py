"""The vendored CDEvents v0.4.1 schemas (tests/data/cdevents-v0.4.1), for validating
events: every CDEvent remediator publishes and every example docs/events.md shows."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

DATA = Path(__file__).resolve().parent / "data" / "cdevents-v0.4.1"
CDEVENTS_PREFIX = "dev.cdevents."


def conformance_example(name: str) -> dict[str, Any]:
    """A conformance example (a CDEvent, the CloudEvent's data), e.g. ``service_deployed``."""
    loaded: dict[str, Any] = json.loads((DATA / "conformance" / f"{name}.json").read_text())
    return loaded


@cache
def _schemas() -> tuple[Registry, dict[str, dict[str, Any]]]:
    """Every schema by its ``$id`` (links resolve through the registry), and the event
    schemas by the CDEvents type their ``context.type`` allows."""
    registry: Registry = Registry()
    by_type: dict[str, dict[str, Any]] = {}
    for path in sorted((DATA / "schemas").rglob("*.json")):
        schema = json.loads(path.read_text())
        registry = registry.with_resource(schema["$id"], Resource.from_contents(schema))
        context = schema.get("properties", {}).get("context", {}).get("properties", {})
        for cd_type in context.get("type", {}).get("enum", []):
            by_type[cd_type] = schema
    return registry, by_type


def schema_errors(cdevent: dict[str, Any]) -> list[str]:
    """Why ``cdevent`` (the CDEvent itself: context, subject, ...) fails the schema of
    its ``context.type``; empty when it is valid. An unknown type is an error too."""
    registry, by_type = _schemas()
    cd_type = cdevent.get("context", {}).get("type")
    schema = by_type.get(cd_type) if isinstance(cd_type, str) else None
    if schema is None:
        return [f"no v0.4.1 schema for context.type {cd_type!r}"]
    validator = Draft202012Validator(
        schema, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER
    )
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
        for e in validator.iter_errors(cdevent)
    ]


def binding_errors(cloudevent: dict[str, Any]) -> list[str]:
    """Why a CloudEvent carrying a CDEvent breaks the CDEvents CloudEvents binding
    (v0.4.1 cloudevents-binding.md) or the CDEvent's schema; empty when it follows both."""
    data = cloudevent.get("data")
    if not isinstance(data, dict):
        return ["data: the CDEvent must be the CloudEvent's data (a JSON object)"]
    errors = schema_errors(data)
    context = data.get("context", {})
    subject = data.get("subject", {})
    expected = {
        "specversion": "1.0",
        "id": context.get("id"),
        "source": context.get("source"),
        "type": context.get("type"),
        "subject": subject.get("id"),
        "time": context.get("timestamp"),
    }
    for attribute, value in expected.items():
        if cloudevent.get(attribute) != value:
            errors.append(
                f"CloudEvents {attribute}: {cloudevent.get(attribute)!r}, binding says {value!r}"
            )
    return errors
