"""utc_text: the journal's one textual form of a time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from remediator.domain.times import utc_text
from remediator.journal.sqlite.rows import parse_utc

ZONES = st.sampled_from([UTC, timezone(timedelta(0)), timezone(timedelta(hours=5, minutes=30)),
                         timezone(timedelta(hours=-8))])  # fmt: skip
TIMES = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(8999, 12, 31))


def expected(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@given(times=st.lists(st.tuples(TIMES, ZONES), min_size=1, max_size=6), repeat=st.booleans())
def test_each_instant_reads_as_its_own_utc_text_repeated_or_not(
    times: list[tuple[datetime, timezone]], repeat: bool
) -> None:
    """The last conversion is kept; a different instant (even an equal one in another
    zone, or the one before it again) never gets another's text."""
    values = [t.replace(tzinfo=zone) for t, zone in times]
    for value in values + values[::-1]:
        assert utc_text(value) == expected(value)
        if repeat:
            assert utc_text(value) == expected(value)


def test_equal_instants_in_other_zones_share_the_text() -> None:
    at = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    assert (
        utc_text(at)
        == utc_text(at.astimezone(timezone(timedelta(hours=2))))
        == ("2026-11-27T10:00:00.000000Z")
    )


@given(times=st.lists(TIMES, min_size=1, max_size=6))
def test_journal_text_parses_back_to_its_instant_repeated_or_not(times: list[datetime]) -> None:
    values = [t.replace(tzinfo=UTC) for t in times]
    for value in values + values[::-1] + values:
        assert parse_utc(utc_text(value)) == value
        assert parse_utc(utc_text(value)).tzinfo is UTC
