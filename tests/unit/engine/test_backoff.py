"""Per-key backoff: doubling waits, capped, scaled by the injected random draw."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from remediator.engine.backoff import Backoff

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def test_waits_double_up_to_the_cap_and_success_forgets() -> None:
    backoff = Backoff(base_seconds=2, max_seconds=60, rand=lambda: 1.0)
    assert backoff.ready("checkout", T0) and not backoff.waiting("checkout")
    delays = [backoff.failed("checkout", T0) for _ in range(8)]
    assert delays == [2, 4, 8, 16, 32, 60, 60, 60]
    assert not backoff.ready("checkout", T0 + timedelta(seconds=59))
    assert backoff.ready("checkout", T0 + timedelta(seconds=60))
    assert backoff.ready("payments", T0)  # per key
    backoff.succeeded("checkout")
    assert backoff.failed("checkout", T0) == 2  # a new wait starts from the base


def test_equal_jitter_keeps_at_least_half_the_period() -> None:
    draws = iter([0.0, 0.5, 0.25])
    backoff = Backoff(base_seconds=2, max_seconds=60, rand=lambda: next(draws))
    # Periods 2, 4, 8: half of each, plus the draw's share of the other half.
    assert [backoff.failed("k", T0) for _ in range(3)] == [1.0, 3.0, 5.0]


def test_many_failures_stay_capped() -> None:
    backoff = Backoff(base_seconds=2, max_seconds=60, rand=lambda: 1.0)
    for _ in range(5000):
        delay = backoff.failed("k", T0)
    assert delay == 60


def test_next_due_ignores_waits_already_over() -> None:
    backoff = Backoff(base_seconds=2, max_seconds=60, rand=lambda: 1.0)
    assert backoff.next_due(T0) is None
    backoff.failed("a", T0)  # due at T0 + 2 s
    backoff.failed("b", T0)
    backoff.failed("b", T0)  # due at T0 + 4 s
    assert backoff.next_due(T0) == T0 + timedelta(seconds=2)
    # "a" is due but not retried yet: the next wait to end is "b"'s, not a past one.
    assert backoff.next_due(T0 + timedelta(seconds=3)) == T0 + timedelta(seconds=4)
    assert backoff.next_due(T0 + timedelta(seconds=5)) is None


def test_keep_only_forgets_the_others() -> None:
    backoff = Backoff(base_seconds=2, max_seconds=60, rand=lambda: 1.0)
    backoff.failed("a", T0)
    backoff.failed("b", T0)
    backoff.keep_only(["b"])
    assert not backoff.waiting("a") and backoff.waiting("b")


@pytest.mark.parametrize(("base", "cap"), [(0, 60), (10, 5), (-1, 1)])
def test_a_schedule_that_cannot_work_is_refused(base: float, cap: float) -> None:
    with pytest.raises(ValueError, match="base_seconds"):
        Backoff(base_seconds=base, max_seconds=cap, rand=lambda: 1.0)
