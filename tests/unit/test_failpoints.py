from __future__ import annotations

import pytest

from remediator.domain.failpoints import NO_FAILPOINTS, Failpoints, InjectedFault


def test_unarmed_points_never_fire() -> None:
    NO_FAILPOINTS.hit("journal.writer")
    Failpoints.parse("").hit("executor.step", "checkout")
    Failpoints.parse(None).hit("decider.signal")


def test_a_keyed_point_fires_only_for_its_key() -> None:
    points = Failpoints.parse("executor.step:checkout")
    points.hit("executor.step", "payments")
    points.hit("decider.signal", "checkout")
    with pytest.raises(InjectedFault, match=r"executor.step \(checkout\)"):
        points.hit("executor.step", "checkout")
    with pytest.raises(InjectedFault):  # every time, without a count
        points.hit("executor.step", "checkout")


def test_an_unkeyed_point_fires_for_every_key_and_counts_down() -> None:
    points = Failpoints.parse(" journal.writer*2 , decider.signal:a ")
    assert points.armed == ("decider.signal:a", "journal.writer*2")
    for _ in range(2):
        with pytest.raises(InjectedFault):
            points.hit("journal.writer")
    points.hit("journal.writer")  # spent


@pytest.mark.parametrize(
    "spec", ["journal", "journal.writer:", "nope.point", "executor.step*x", "decider.signal:a b"]
)
def test_a_bad_spec_names_the_item(spec: str) -> None:
    with pytest.raises(ValueError, match="failpoint"):
        Failpoints.parse(spec)
