"""Retention verdicts (pure): newest N, younger than D days, in use; the rest pruned."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from remediator.domain.lifecycle import (
    Remediation,
    RemediationStatus,
    StepRecord,
    StepStatus,
)
from remediator.domain.retention import RetentionPolicy, Verdict, backups_in_use, judge

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def days_ago(n: float) -> datetime:
    return NOW - timedelta(days=n)


def test_newest_then_young_then_in_use_then_pruned() -> None:
    items = [("a", days_ago(1)), ("b", days_ago(2)), ("c", days_ago(5)), ("d", days_ago(20)),
             ("e", days_ago(30)), ("f", days_ago(40))]  # fmt: skip
    judged = judge(items, policy=RetentionPolicy(keep_newest=2, keep_days=7), now=NOW,
                   in_use={"e", "a"})  # fmt: skip
    assert [(j.key, j.verdict) for j in judged] == [
        ("a", Verdict.NEWEST),
        ("b", Verdict.NEWEST),
        ("c", Verdict.YOUNG),
        ("d", Verdict.PRUNE),
        ("e", Verdict.IN_USE),
        ("f", Verdict.PRUNE),
    ]


def test_the_newest_is_kept_however_old_and_age_zero_keeps_nothing_extra() -> None:
    judged = judge([("x", days_ago(400)), ("y", days_ago(0.01))], now=NOW,
                   policy=RetentionPolicy(keep_newest=1, keep_days=0))  # fmt: skip
    assert [j.verdict for j in judged] == [Verdict.NEWEST, Verdict.PRUNE]


def test_a_policy_that_could_prune_everything_is_refused() -> None:
    with pytest.raises(ValueError, match="keep_newest"):
        RetentionPolicy(keep_newest=0, keep_days=7)


def remediation(status: RemediationStatus, backup_id: str) -> Remediation:
    return Remediation(
        id=f"rem-{backup_id}", signal_id="s", service="checkout", namespace="shop", rule="r",
        action=None, status=status, reason=None, manual=False, automated=True,
        created_at=NOW, updated_at=NOW, explanation="",
        steps=(StepRecord(idx=0, kind="backup_database", status=StepStatus.SUCCEEDED,
                          started_at=NOW, detail={"backup": {"id": backup_id}}),),
    )  # fmt: skip


def test_backups_of_remediations_not_over_are_in_use() -> None:
    found = backups_in_use([
        remediation(RemediationStatus.RUNNING, "b-running"),
        remediation(RemediationStatus.NEEDS_HUMAN, "b-people"),
        remediation(RemediationStatus.SUCCEEDED, "b-done"),
        remediation(RemediationStatus.FAILED, "b-failed"),
    ])  # fmt: skip
    assert found == {"b-running", "b-people"}
