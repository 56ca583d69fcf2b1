"""Prometheus-style durations (``90s``, ``30m``, ``1h30m``) used throughout rule files."""

from __future__ import annotations

import re
from datetime import timedelta

_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+)(ms|s|m|h|d|w)")


def parse_duration(text: str) -> timedelta:
    """Parse ``1h30m``-style text; raise ``ValueError`` naming the accepted form."""
    cleaned = text.strip()
    parts = _PART.findall(cleaned)
    if not cleaned or "".join(number + unit for number, unit in parts) != cleaned:
        raise ValueError(f"invalid duration {text!r}: use forms like 90s, 30m, 1h30m, 2d")
    seconds = sum(int(number) * _UNIT_SECONDS[unit] for number, unit in parts)
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """Inverse of :func:`parse_duration` for whole seconds (``1800s`` -> ``30m``)."""
    remaining = int(value.total_seconds())
    if remaining == 0:
        return "0s"
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, remaining = divmod(remaining, size)
        if count:
            out.append(f"{count}{unit}")
    return "".join(out)
