"""The CloudEvents Kafka protocol binding (v1.0.2), both ways, in one place: the
consumer (``ingress.kafka``) decodes with it and the outcome publisher
(``connectors.kafka``) encodes with it. Pure: records are (value, headers) pairs as
aiokafka gives and takes them; no client is imported here.

Out: **structured mode** only. The value is the whole event in the JSON format, the one
header is ``content-type: application/cloudevents+json``, and no ``ce_*`` headers are
added: the binding reads any ``ce_*`` header as binary mode (the ``cloudevents`` SDK's
``from_kafka`` does exactly that), so repeating attributes there made the record
ambiguous. Why structured and not binary: docs/events.md, "Outcome events out".

In: the mode as the binding says (section 3): a ``content-type`` header starting with
``application/cloudevents`` is structured mode (only the JSON format is read); else a
``ce_specversion`` header is binary mode (attributes in ``ce_*`` headers,
``content-type`` is ``datacontenttype``, the value is the data). A record with neither
is read as a structured JSON event, as before: that is what people send by hand with
kcat or the console producer, which set no headers.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any

import orjson

from remediator.domain.errors import InvalidInput
from remediator.domain.rules.events import is_json_media_type

CONTENT_TYPE_HEADER = "content-type"
STRUCTURED_PREFIX = "application/cloudevents"
JSON_FORMAT = "application/cloudevents+json"
ATTRIBUTE_PREFIX = "ce_"

Headers = Iterable[tuple[str, bytes]]


class ContentMode(StrEnum):
    STRUCTURED = "structured"
    BINARY = "binary"


class Unparseable(Exception):
    """The record's bytes are not JSON where JSON is due (a dead letter ``unparseable``)."""


def encode(event: Mapping[str, Any]) -> tuple[bytes, list[tuple[str, bytes]]]:
    """One event as a structured-mode record: its value and headers."""
    return orjson.dumps(event), [(CONTENT_TYPE_HEADER, JSON_FORMAT.encode())]


def content_mode(headers: Headers) -> ContentMode:
    """Structured or binary, as the binding detects it (a record without either header
    is taken as structured JSON: see the module's doc)."""
    names = {name.lower(): raw for name, raw in headers}
    content_type = names.get(CONTENT_TYPE_HEADER)
    if content_type is not None and content_type.lower().startswith(STRUCTURED_PREFIX.encode()):
        return ContentMode.STRUCTURED
    if f"{ATTRIBUTE_PREFIX}specversion" in names:
        return ContentMode.BINARY
    return ContentMode.STRUCTURED


def decode(value: bytes | None, headers: Headers) -> dict[str, Any]:
    """The CloudEvent a record carries, as the JSON format's object (binary-mode data
    that is not JSON comes as ``data_base64``). Raises ``Unparseable`` for bytes that
    are not JSON where JSON is due, ``InvalidInput`` for anything else wrong; whether
    the event itself is valid is ``signal_from_cloudevent``'s to say."""
    headers = list(headers)
    if content_mode(headers) is ContentMode.BINARY:
        return _binary(value, headers)
    return _structured(value, headers)


def event_id(value: bytes | None, headers: Headers) -> str | None:
    """The CloudEvents id of a record, in either mode; None if it has none."""
    try:
        found = decode(value, headers).get("id")
    except (Unparseable, InvalidInput):
        return None
    return found if isinstance(found, str) else None


def _structured(value: bytes | None, headers: Sequence[tuple[str, bytes]]) -> dict[str, Any]:
    content_type = _header(headers, CONTENT_TYPE_HEADER)
    if content_type is not None and not is_json_media_type(content_type):
        raise InvalidInput(
            f"{content_type!r}: only the JSON event format is read", where=CONTENT_TYPE_HEADER
        )
    if not value:
        raise Unparseable("empty message (no CloudEvent)")
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise Unparseable(f"not JSON: {exc}") from None
    if not isinstance(event, dict):
        raise Unparseable("not a JSON object (structured-mode CloudEvent)")
    return event


def _binary(value: bytes | None, headers: Sequence[tuple[str, bytes]]) -> dict[str, Any]:
    event: dict[str, Any] = {}
    for name, raw in headers:
        lowered = name.lower()
        if lowered.startswith(ATTRIBUTE_PREFIX):
            attribute = lowered.removeprefix(ATTRIBUTE_PREFIX)
        elif lowered == CONTENT_TYPE_HEADER:
            attribute = "datacontenttype"
        else:
            continue  # not the event's: the producer's own headers
        if attribute in event or attribute in ("data", "data_base64"):
            raise InvalidInput("header repeated or reserved", where=f"header {name}")
        event[attribute] = _text(raw, where=f"header {name}")
    if value:
        content_type = event.get("datacontenttype")
        if content_type is None or is_json_media_type(content_type):
            try:
                event["data"] = orjson.loads(value)
            except orjson.JSONDecodeError as exc:
                raise Unparseable(f"binary mode: the value is not JSON: {exc}") from None
        else:
            # Kept as the JSON format keeps binary data; the mapping says it reads JSON only.
            event["data_base64"] = base64.b64encode(value).decode()
    return event


def _header(headers: Sequence[tuple[str, bytes]], wanted: str) -> str | None:
    for name, raw in headers:
        if name.lower() == wanted:
            return _text(raw, where=f"header {name}")
    return None


def _text(raw: bytes, *, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("not UTF-8", where=where) from None
