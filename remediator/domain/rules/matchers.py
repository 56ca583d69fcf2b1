"""Alertmanager label matchers: ``name="v"``, ``name!="v"``, ``name=~"re"``, ``name!~"re"``.

Syntax and semantics are Alertmanager's (0.25, ``pkg/labels/parse.go`` and
``matcher.go``): a missing label is the empty string; a regex is RE2 anchored as
``^(?:re)$``, so it matches the whole value; :mod:`remediator.domain.rules.re2` turns it
into the Python pattern that matches the same values, and refuses what Go refuses
(lookaround, backreferences...). One line may hold several matchers, comma-separated and
optionally in braces (``{severity="page", team="db"}``), as in Alertmanager's
``matchers:``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from remediator.domain.rules import re2

# Go's \s is ASCII: tab, newline, form feed, carriage return, space (no \v).
_SPACE = "[\t\n\f\r ]"
_LABEL_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_MATCHER = re.compile(
    rf"^{_SPACE}*(?P<name>{_LABEL_NAME}){_SPACE}*(?P<op>=~|=|!=|!~){_SPACE}*"
    rf"(?P<value>.*?){_SPACE}*\Z",
    re.DOTALL,
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
            object.__setattr__(self, "_pattern", _compile(self.value))

    def matches(self, value: str) -> bool:
        """Whether one label value (``""`` when absent) satisfies this matcher."""
        if self.op is MatchOp.EQUAL:
            return value == self.value
        if self.op is MatchOp.NOT_EQUAL:
            return value != self.value
        assert self._pattern is not None
        found = self._pattern.search(value) is not None
        return found if self.op is MatchOp.REGEX else not found

    def matches_labels(self, labels: Mapping[str, str]) -> bool:
        return self.matches(labels.get(self.name, ""))

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'{self.name}{self.op.value}"{escaped}"'


def parse_matcher(text: str) -> Matcher:
    """Parse one matcher as Alertmanager does: ``severity=~"critical|page"``.

    Values may be double-quoted or bare; ``\\"``, ``\\\\`` and ``\\n`` are escapes in
    both, any other backslash is itself. A double quote inside a value must be escaped.
    Raises ``ValueError`` with a message fit for a rule-file problem report.
    """
    found = _MATCHER.match(text)
    if found is None:
        raise ValueError(
            f"invalid matcher {text!r}: expected name, one of = != =~ !~, then a value "
            f'(e.g. severity=~"critical|page")'
        )
    value = _unescape(found["value"], text)
    op = MatchOp(found["op"])
    if op in (MatchOp.REGEX, MatchOp.NOT_REGEX):
        try:
            _compile(value)
        except (re2.Re2Error, re.error) as exc:
            raise ValueError(f"invalid regex in matcher {text!r}: {exc}") from None
    return Matcher(found["name"], op, value)


def parse_matchers(text: str) -> list[Matcher]:
    """Parse one ``matchers:`` line as Alertmanager does: comma-separated matchers,
    optionally in braces (``{a="1", b=~"x|y"}``); commas inside quotes are text."""
    return [parse_matcher(token) for token in split_matchers(text)]


def split_matchers(text: str) -> list[str]:
    """The matchers of one line, unparsed (Alertmanager's ``ParseMatchers`` split)."""
    body = text.removeprefix("{").removesuffix("}")
    tokens: list[str] = []
    token: list[str] = []
    quoted = escaped = False
    for char in body:
        if char == "," and not quoted:
            tokens.append("".join(token))
            token = []
            continue
        if char == '"':
            quoted = quoted if escaped else not quoted
            escaped = False
        elif char == "\\":
            escaped = not escaped
        elif char != ",":
            escaped = False
        token.append(char)
    last = "".join(token).strip()
    if last:
        tokens.append(last)
    return tokens


def _unescape(raw: str, text: str) -> str:
    quoted = raw.startswith('"')
    body = raw[1:] if quoted else raw
    out: list[str] = []
    index = 0
    while index < len(body):
        char = body[index]
        if char == "\\" and index + 1 < len(body):
            following = body[index + 1]
            # An unknown escape is kept as written, backslash and all.
            out.append(_ESCAPES.get(following, "\\" + following))
            index += 2
            continue
        if char == '"':
            if not quoted or index < len(body) - 1:
                raise ValueError(f"unescaped double quote in the value of matcher {text!r}")
            quoted = False  # the closing quote
        else:
            out.append(char)
        index += 1
    if quoted:
        raise ValueError(f"unterminated quoted value in matcher {text!r}")
    return "".join(out)


def _compile(regex: str) -> re.Pattern[str]:
    # Exactly Alertmanager's wrapping (NewMatcher), translated as a whole and searched
    # like Go's MatchString: "a)|(b" is as valid, and as loosely anchored, as there.
    return re.compile(re2.translate(f"^(?:{regex})$"))


def first_mismatch(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> Matcher | None:
    """The first matcher the labels fail (``None`` means all match, as Alertmanager ANDs)."""
    for matcher in matchers:
        if not matcher.matches_labels(labels):
            return matcher
    return None
