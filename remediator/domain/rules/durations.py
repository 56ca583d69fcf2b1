"""Prometheus durations (``90s``, ``30m``, ``1h30m``, ``0``) used throughout rule files.

The grammar is Prometheus' own (``model.ParseDuration`` of prometheus/common): units
``y w d h m s ms`` in that order, each at most once, each with a whole number of ASCII
digits; ``0`` alone is zero; nothing else (no spaces, signs, fractions, ``30m1h``,
``1h1h``). A year is 365 days. Longer than Go's time.Duration holds (about 292 years) is
out of range there, and so here: a rule file promtool refuses is refused here too.
"""

from __future__ import annotations

import re
from datetime import timedelta

_MS_PER_UNIT = {
    "y": 365 * 86_400_000,
    "w": 7 * 86_400_000,
    "d": 86_400_000,
    "h": 3_600_000,
    "m": 60_000,
    "s": 1_000,
    "ms": 1,
}
_DURATION = re.compile("".join(f"(?:(?P<{unit}>[0-9]+){unit})?" for unit in _MS_PER_UNIT), re.ASCII)
# Go's time.Duration: int64 nanoseconds.
_MAX_MS = (2**63 - 1) // 1_000_000
_FORMS = "use forms like 90s, 30m, 1h30m, 2d (units y w d h m s ms, largest first, each once)"


def parse_duration(text: str) -> timedelta:
    """Parse a Prometheus duration; raise ``ValueError`` naming the accepted form."""
    if text == "0":
        return timedelta(0)
    found = _DURATION.fullmatch(text) if text else None
    if found is None:
        raise ValueError(f"invalid duration {text!r}: {_FORMS}")
    total_ms = 0
    for unit, per_unit in _MS_PER_UNIT.items():
        count = found[unit]
        if count is not None:
            total_ms += int(count) * per_unit
            if total_ms > _MAX_MS:
                raise ValueError(f"duration {text!r} is out of range (at most about 292y)")
    return timedelta(milliseconds=total_ms)


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
