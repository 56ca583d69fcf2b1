"""Matchers against a straightforward model of Alertmanager's semantics.

Reference (prometheus/alertmanager pkg/labels/matcher.go): the regex is compiled as
``^(?:VALUE)$`` with Go's RE2, where ``$`` means end of text; a missing label is "".
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from remediator.domain.rules.matchers import Matcher, MatchOp, first_mismatch, parse_matcher

NAMES = st.sampled_from(["alertname", "severity", "service", "team", "env"])
VALUES = st.text(alphabet='ab-x\n"\\', max_size=4)
# Regexes built from pieces valid in both RE2 and Python, including alternation
# (where anchoring bugs show: ^a|b$ is not ^(?:a|b)$) and empty-matching pieces.
REGEX_ATOMS = st.sampled_from(["a", "b", "x", ".", ".*", "a+", "b?", "[ab]", "[^a]", "\\n", ""])
REGEXES = st.builds(
    lambda parts, alternate: "|".join(parts) if alternate else "".join(parts),
    st.lists(REGEX_ATOMS, min_size=1, max_size=3),
    st.booleans(),
)
LABELSETS = st.dictionaries(NAMES, VALUES, max_size=4)


def reference_matches(op: str, name: str, value: str, labels: dict[str, str]) -> bool:
    actual = labels.get(name, "")
    if op == "=":
        return actual == value
    if op == "!=":
        return actual != value
    anchored = re.compile(r"\A(?:" + value + r")\Z")  # Go's ^...$ without multi-line
    found = anchored.search(actual) is not None
    return found if op == "=~" else not found


@given(name=NAMES, value=VALUES, labels=LABELSETS, op=st.sampled_from(["=", "!="]))
def test_equality_matchers_agree_with_alertmanager(
    name: str, value: str, labels: dict[str, str], op: str
) -> None:
    matcher = Matcher(name, MatchOp(op), value)
    assert matcher.matches_labels(labels) == reference_matches(op, name, value, labels)


@given(name=NAMES, value=REGEXES, labels=LABELSETS, op=st.sampled_from(["=~", "!~"]))
def test_regex_matchers_agree_with_alertmanager(
    name: str, value: str, labels: dict[str, str], op: str
) -> None:
    matcher = Matcher(name, MatchOp(op), value)
    assert matcher.matches_labels(labels) == reference_matches(op, name, value, labels)


@given(name=NAMES, value=REGEXES, labels=LABELSETS)
def test_negative_matchers_are_complements(name: str, value: str, labels: dict[str, str]) -> None:
    assert Matcher(name, MatchOp.NOT_REGEX, value).matches_labels(labels) != Matcher(
        name, MatchOp.REGEX, value
    ).matches_labels(labels)
    assert Matcher(name, MatchOp.NOT_EQUAL, value).matches_labels(labels) != Matcher(
        name, MatchOp.EQUAL, value
    ).matches_labels(labels)


@given(name=NAMES, value=REGEXES, op=st.sampled_from(list(MatchOp)))
def test_missing_label_behaves_as_empty_string(name: str, value: str, op: MatchOp) -> None:
    matcher = Matcher(name, op, value)
    assert matcher.matches_labels({}) == matcher.matches_labels({name: ""})


@given(
    name=NAMES, value=st.text(max_size=8), op=st.sampled_from([MatchOp.EQUAL, MatchOp.NOT_EQUAL])
)
def test_printed_matchers_parse_back(name: str, value: str, op: MatchOp) -> None:
    matcher = Matcher(name, op, value)
    assert parse_matcher(str(matcher)) == matcher


@given(
    matchers=st.lists(st.tuples(NAMES, st.sampled_from(list(MatchOp)), REGEXES), max_size=4),
    labels=LABELSETS,
)
def test_a_matcher_list_is_a_conjunction(
    matchers: list[tuple[str, str, str]], labels: dict[str, str]
) -> None:
    built = [Matcher(name, MatchOp(op), value) for name, op, value in matchers]
    expected = all(reference_matches(op, name, value, labels) for name, op, value in matchers)
    assert (first_mismatch(built, labels) is None) == expected


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ('severity=~"crit|page"', {"severity": "crit"}, True),
        ('severity=~"crit|page"', {"severity": "critical"}, False),  # anchored both ends
        ('severity=~"crit|page"', {"severity": "xpage"}, False),  # alternation stays anchored
        ('severity=~"a"', {"severity": "a\n"}, False),  # RE2's $ is end of text
        ('team!="ops"', {}, True),  # missing label is "", which is not "ops"
        ('team=""', {}, True),
        ('team=~".+"', {}, False),
        ('team!~".*"', {"team": "x"}, False),
        ("env=prod", {"env": "prod"}, True),  # bare values, as Alertmanager accepts
        ('summary="say \\"hi\\""', {"summary": 'say "hi"'}, True),
    ],
)
def test_examples(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_matcher(text).matches_labels(labels) is expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("severity", "invalid matcher"),
        ('1abc="x"', "invalid matcher"),
        ('severity=~"(crit"', "invalid regex"),
        ('severity="crit', "unterminated"),
        ('severity="a"b"', "unescaped double quote"),
        ('severity=a"b', "unescaped double quote"),
    ],
)
def test_invalid_matchers_are_rejected(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_matcher(text)
