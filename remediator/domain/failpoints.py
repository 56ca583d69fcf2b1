"""Named fault-injection points, for the faults test suite (as etcd's gofail).

Some faults cannot be caused from outside a process: a bug that raises where no
error was expected, a journal writer thread that dies. The faults suite arms a point
with the ``failpoints`` setting (``REMEDIATOR_FAILPOINTS``) and the component that
owns it raises :class:`InjectedFault` there. Unarmed, a point costs one dict lookup.
The daemon logs a WARNING at start-up when any point is armed.

Spec: ``POINT[:KEY][*COUNT]`` separated by commas, e.g.
``decider.signal:checkout,executor.step:payments*1,journal.writer``. ``KEY`` narrows
a point to one service; ``COUNT`` fires it that many times (default: every time).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

POINTS = frozenset({"decider.signal", "executor.step", "journal.writer"})
_ITEM = re.compile(r"^(?P<point>[a-z.]+)(?::(?P<key>[A-Za-z0-9._-]+))?(?:\*(?P<count>[0-9]+))?$")


class InjectedFault(RuntimeError):
    """Raised at an armed failpoint: an unexpected error, on purpose."""


@dataclass(slots=True)
class Failpoints:
    _armed: dict[tuple[str, str | None], int | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str | None) -> Failpoints:
        """ValueError names the item that is not ``POINT[:KEY][*COUNT]`` or not a point."""
        armed: dict[tuple[str, str | None], int | None] = {}
        for item in filter(None, (part.strip() for part in (spec or "").split(","))):
            match = _ITEM.match(item)
            if match is None or match["point"] not in POINTS:
                raise ValueError(
                    f"failpoint {item!r}: expected POINT[:KEY][*COUNT] with POINT one of "
                    f"{', '.join(sorted(POINTS))}"
                )
            count = int(match["count"]) if match["count"] else None
            armed[(match["point"], match["key"])] = count
        return cls(armed)

    @property
    def armed(self) -> tuple[str, ...]:
        return tuple(
            point + (f":{key}" if key else "") + (f"*{count}" if count is not None else "")
            for (point, key), count in sorted(self._armed.items(), key=str)
        )

    def hit(self, point: str, key: str | None = None) -> None:
        """Raise InjectedFault if ``point`` (for ``key``, or for any key) is armed."""
        if not self._armed:
            return
        for slot in ((point, key), (point, None)):
            if slot in self._armed:
                left = self._armed[slot]
                if left == 0:
                    continue
                if left is not None:
                    self._armed[slot] = left - 1
                raise InjectedFault(f"injected fault at {point}" + (f" ({key})" if key else ""))


NO_FAILPOINTS = Failpoints()
