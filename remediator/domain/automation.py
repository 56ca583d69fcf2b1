"""How far a service trusts remediator: its automation level (a trust ladder), and what
the record of its recent remediations says about promoting it.

Pure: the catalog sets the level, the decision honours it, the journal keeps each change
and counts outcomes; nothing here reads a clock.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from enum import StrEnum


class AutomationLevel(StrEnum):
    """The rungs, from least to most trusted."""

    NOTIFY = "notify"  # decide and tell people what would run; never act
    APPROVE = "approve"  # every automatic plan waits for people to approve it
    AUTO = "auto"  # act on the rules' plans (what remediator did before levels existed)

    @property
    def describe(self) -> str:
        return _DESCRIPTIONS[self]


_DESCRIPTIONS = {
    AutomationLevel.NOTIFY: "decides and tells, never acts",
    AutomationLevel.APPROVE: "every automatic plan waits for approval",
    AutomationLevel.AUTO: "acts on its plans",
}


def median_seconds(durations: Sequence[float]) -> float | None:
    """The median of durations in seconds (the mean of the middle two for an even count,
    as PostgreSQL's ``percentile_cont(0.5)``); None when there are none."""
    return float(statistics.median(durations)) if durations else None
