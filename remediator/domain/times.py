"""The one textual form of a time in the journal and the API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_ZERO = timedelta(0)


def utc_text(value: datetime) -> str:
    """Fixed-width UTC text ('2026-11-27T10:00:00.000000Z'): sorts like the instants."""
    if value.tzinfo is UTC:  # the usual case, twice as fast: drop the "+00:00"
        return value.isoformat(timespec="microseconds")[:-6] + "Z"
    if value.utcoffset() != _ZERO:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
