"""Alertmanager label matchers: ``name="v"``, ``name!="v"``, ``name=~"re"``, ``name!~"re"``.

Semantics follow Alertmanager (``pkg/labels/matcher.go``): a missing label is the
empty string, and regexes are anchored like ``^(?:re)$`` so they match the whole
value. Python's ``re`` stands in for Go's RE2; ``fullmatch`` gives RE2's anchoring
(``$`` in Python would also match before a trailing newline, RE2's does not).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

_LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
_MATCHER = re.compile(
    rf"^\s*(?P<name>{_LABEL_NAME})\s*(?P<op>=~|!~|!=|=)\s*(?P<value>.*?)\s*$", re.DOTALL
)
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}


class MatchOp(StrEnum):
    EQUAL = "="
    NOT_EQUAL = "!="
    REGEX = "=~"
    NOT_REGEX = "!~"


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    op: MatchOp
    value: str
    _pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.op in (MatchOp.REGEX, MatchOp.NOT_REGEX):
            # Wrapped in a group so alternations stay anchored as a whole: a|b, not ^a|b$.
            object.__setattr__(self, "_pattern", re.compile(f"(?:{self.value})"))

    def matches(self, value: str) -> bool:
        """Whether one label value (``""`` when absent) satisfies this matcher."""
        if self.op is MatchOp.EQUAL:
            return value == self.value
        if self.op is MatchOp.NOT_EQUAL:
            return value != self.value
        assert self._pattern is not None
        found = self._pattern.fullmatch(value) is not None
        return found if self.op is MatchOp.REGEX else not found

    def matches_labels(self, labels: Mapping[str, str]) -> bool:
        return self.matches(labels.get(self.name, ""))

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'{self.name}{self.op.value}"{escaped}"'


def parse_matcher(text: str) -> Matcher:
    """Parse one matcher as written in Alertmanager routes: ``severity=~"critical|page"``.

    Values may be double-quoted (with ``\\"``, ``\\\\`` and ``\\n`` escapes) or bare.
    Raises ``ValueError`` with a message fit for a rule-file problem report.
    """
    found = _MATCHER.match(text)
    if found is None:
        raise ValueError(
            f"invalid matcher {text!r}: expected name, one of = != =~ !~, then a value "
            f'(e.g. severity=~"critical|page")'
        )
    raw = found["value"]
    value = _unquote(raw, text) if raw.startswith('"') else raw
    op = MatchOp(found["op"])
    if op in (MatchOp.REGEX, MatchOp.NOT_REGEX):
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regex in matcher {text!r}: {exc}") from None
    return Matcher(found["name"], op, value)


def _unquote(raw: str, text: str) -> str:
    if len(raw) < 2 or not raw.endswith('"'):
        raise ValueError(f"unterminated quoted value in matcher {text!r}")
    body = raw[1:-1]
    out: list[str] = []
    index = 0
    while index < len(body):
        char = body[index]
        if char == "\\":
            if index + 1 >= len(body) or body[index + 1] not in _ESCAPES:
                raise ValueError(f"invalid escape in matcher {text!r}")
            out.append(_ESCAPES[body[index + 1]])
            index += 2
            continue
        if char == '"':
            raise ValueError(f"unescaped quote inside value of matcher {text!r}")
        out.append(char)
        index += 1
    return "".join(out)


def first_mismatch(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> Matcher | None:
    """The first matcher the labels fail (``None`` means all match, as Alertmanager ANDs)."""
    for matcher in matchers:
        if not matcher.matches_labels(labels):
            return matcher
    return None
