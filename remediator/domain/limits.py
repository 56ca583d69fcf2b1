"""How much one request or event may carry: checked where input enters.

Everything a signal carries is journaled and served again by the read API, so one
oversized label would be paid for on every page that lists it. The webhook and the
Kafka intake check these bounds before anything is journaled; a violation names the
field, its size and the limit, never the value itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields

from remediator.domain.errors import InvalidInput
from remediator.domain.paging import shown

KIB = 1024
# Names that read well in a dotted path (Prometheus label names); others are quoted.
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class TooLarge(InvalidInput):
    """The request as a whole is larger than accepted (HTTP 413), e.g. too many alerts."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InputLimits:
    """Bounds on one signal and on one request (see docs/operations.md, Limits)."""

    alerts_per_request: int = 5000
    labels_per_signal: int = 64
    annotations_per_signal: int = 64
    name_bytes: int = 256  # label and annotation names
    label_value_bytes: int = 4 * KIB
    annotation_value_bytes: int = 16 * KIB
    field_bytes: int = 16 * KIB  # any other text kept with a signal (receiver, URLs, ...)
    event_bytes: int = 256 * KIB  # one Kafka record's value

    def __post_init__(self) -> None:
        for limit in fields(self):
            if getattr(self, limit.name) < 1:
                raise ValueError(f"{limit.name} must be at least 1")

    def check_labels(self, labels: Mapping[str, str], *, where: str) -> None:
        self._check_mapping(
            labels,
            where=where,
            most=self.labels_per_signal,
            value_bytes=self.label_value_bytes,
            noun="labels",
        )

    def check_annotations(self, annotations: Mapping[str, str], *, where: str) -> None:
        self._check_mapping(
            annotations,
            where=where,
            most=self.annotations_per_signal,
            value_bytes=self.annotation_value_bytes,
            noun="annotations",
        )

    def check_text(self, value: str, *, where: str) -> None:
        check_bytes(value, limit=self.field_bytes, where=where)

    def alert_fits(
        self, labels: Mapping[str, str], annotations: Mapping[str, str], *texts: str
    ) -> bool:
        """A fast yes: within every bound without encoding anything (at most 4 bytes a
        character). False means only that the ``check_*`` methods must look."""
        if len(labels) > self.labels_per_signal or len(annotations) > self.annotations_per_signal:
            return False
        names = self.name_bytes // 4
        for items, values in ((labels, self.label_value_bytes // 4),
                              (annotations, self.annotation_value_bytes // 4)):  # fmt: skip
            for name, value in items.items():
                if len(name) > names or len(value) > values:
                    return False
        texts_chars = self.field_bytes // 4
        return all(len(text) <= texts_chars for text in texts)

    def check_alert_count(self, count: int, *, where: str) -> None:
        if count > self.alerts_per_request:
            raise TooLarge(
                f"{count} alerts in one request, limit {self.alerts_per_request} "
                "(set max_alerts in the Alertmanager receiver to at most this)",
                where=where,
            )

    def _check_mapping(
        self, items: Mapping[str, str], *, where: str, most: int, value_bytes: int, noun: str
    ) -> None:
        if len(items) > most:
            raise InvalidInput(f"{len(items)} {noun}, limit {most}", where=where)
        # At most 4 bytes a character: the usual short names and values need neither an
        # encoding nor a path built to be known within bounds (a storm's hot loop).
        name_chars, value_chars = self.name_bytes // 4, value_bytes // 4
        for name, value in items.items():
            if len(name) <= name_chars and len(value) <= value_chars:
                continue
            size = utf8_size(name)
            if size > self.name_bytes:
                raise InvalidInput(
                    f"a name is {size} bytes, limit {self.name_bytes} ({shown(name)})",
                    where=where,
                )
            check_bytes(value, limit=value_bytes, where=key_path(where, name))


def check_bytes(value: str, *, limit: int, where: str) -> None:
    """``InvalidInput`` naming ``where`` and the size if ``value`` is over ``limit`` bytes."""
    # At most 4 bytes a character: short strings need no encoding to be known small.
    if len(value) * 4 <= limit:
        return
    size = utf8_size(value)
    if size > limit:
        raise InvalidInput(f"value is {size} bytes, limit {limit}", where=where)


def utf8_size(value: str) -> int:
    return len(value.encode("utf-8", "surrogatepass"))


def key_path(where: str, name: str) -> str:
    """``alerts[3].labels`` + ``foo`` -> ``alerts[3].labels.foo`` (odd names quoted)."""
    if _PLAIN_NAME.fullmatch(name):
        return f"{where}.{name}"
    return f"{where}[{shown(name)}]"
