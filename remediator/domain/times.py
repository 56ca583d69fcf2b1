"""The one textual form of a time in the journal and the API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_ZERO = timedelta(0)


# The last time converted, and its text: one instant is written many times in a row
# (a request's receipt on each of its signals, a batch's decision time on each row).
_last: tuple[datetime | None, str] = (None, "")


def utc_text(value: datetime) -> str:
    """Fixed-width UTC text ('2026-11-27T10:00:00.000000Z'): sorts like the instants."""
    global _last
    last, text = _last  # one read: another thread may replace it meanwhile
    if value is last:
        return text
    if value.tzinfo is UTC:  # the usual case, twice as fast: drop the "+00:00"
        text = value.isoformat(timespec="microseconds")[:-6] + "Z"
    else:
        utc = value if value.utcoffset() == _ZERO else value.astimezone(UTC)
        text = utc.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    _last = (value, text)
    return text
