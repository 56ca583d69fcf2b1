"""Page cursors and sizes of the list APIs: checked the same way at every boundary."""

from __future__ import annotations

import re

from remediator.domain.errors import InvalidInput

# A cursor is a row's seq as this server issued it: ASCII digits that fit SQLite's
# signed 64-bit INTEGER. str.isdigit() would also take "²" or "٣", and int() of a
# 5,000-digit string raises; both are checked before int() runs.
MAX_CURSOR = 2**63 - 1
_CURSOR = re.compile(r"[0-9]{1,19}")
_SHOWN_CHARS = 40


def parse_cursor(text: str) -> int:
    """The seq a cursor stands for; ``InvalidInput`` (where ``cursor``) otherwise."""
    if _CURSOR.fullmatch(text) is None or int(text) > MAX_CURSOR:
        raise InvalidInput(
            f"not one this server issued (pass the `next` of an earlier page), got {shown(text)}",
            where="cursor",
        )
    return int(text)


def check_limit(limit: int, *, maximum: int = MAX_CURSOR - 1) -> int:
    """``limit`` if it is a page size the journal can use; ``InvalidInput`` otherwise."""
    if not 1 <= limit <= maximum:
        raise InvalidInput(f"must be between 1 and {maximum}, got {limit}", where="limit")
    return limit


def shown(value: str) -> str:
    """A client's value quoted for an error message: escaped, and cut if long."""
    if len(value) > _SHOWN_CHARS:
        return repr(value[:_SHOWN_CHARS]) + f"... ({len(value)} characters)"
    return repr(value)
