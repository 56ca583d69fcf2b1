"""remediator's durations and matchers take exactly what promtool and amtool take
(tests/grammar_table.py, whose verdicts came from those tools)."""

from __future__ import annotations

import pytest

from remediator.domain.rules.durations import parse_duration
from remediator.domain.rules.matchers import parse_matchers
from tests.grammar_table import DURATIONS, MATCHERS, REFUSED_BY_CHOICE, Labels


def accepts_duration(text: str) -> bool:
    try:
        parse_duration(text)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize(("text", "promtool_accepts"), DURATIONS)
def test_duration_accepted_exactly_as_promtool(text: str, promtool_accepts: bool) -> None:
    assert accepts_duration(text) is promtool_accepts


@pytest.mark.parametrize(
    ("line", "amtool_accepts", "probes"), MATCHERS, ids=[case[0] for case in MATCHERS]
)
def test_matchers_accepted_and_matching_exactly_as_amtool(
    line: str, amtool_accepts: bool, probes: tuple[tuple[Labels, bool], ...]
) -> None:
    try:
        matchers = parse_matchers(line)
    except ValueError:
        assert not amtool_accepts or line in REFUSED_BY_CHOICE
        return
    assert amtool_accepts and line not in REFUSED_BY_CHOICE
    for labels, routed in probes:
        assert all(m.matches_labels(labels) for m in matchers) is routed, labels


def test_the_table_covers_what_the_issue_names() -> None:
    durations = dict(DURATIONS)
    assert durations["30m1h"] is False and durations["1h1h"] is False
    assert durations["1h30m"] is True
    lines = {line: accepted for line, accepted, _ in MATCHERS}
    assert lines['x=~"(?=a)a"'] is False and lines['x=~"(a)\\\\1"'] is False


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1y", 365 * 86400), ("2w1d", 15 * 86400), ("1h30m", 5400), ("1s500ms", 1.5), ("0", 0)],
)
def test_duration_values(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


def test_duration_errors_name_the_form() -> None:
    with pytest.raises(ValueError, match="largest first, each once"):
        parse_duration("30m1h")
    with pytest.raises(ValueError, match="out of range"):
        parse_duration("293y")
