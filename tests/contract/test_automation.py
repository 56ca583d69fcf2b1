"""AutomationLevels and ServiceStats: level changes with who made them, and a service's
outcomes over a window (GET /api/v1/services)."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

import pytest

from remediator.domain.automation import AutomationLevel
from remediator.domain.lifecycle import RemediationStatus
from remediator.domain.plans import ActionKind
from remediator.ports import AutomationLevelChange, Journal, ServiceOutcomes
from tests.contract.builders import NOW, ended_remediation
from tests.contract.conftest import OpenReplica

L = AutomationLevel
S = RemediationStatus
BY = "rules /etc/remediator/rules (sha256:0123456789ab)"
LATER = NOW + timedelta(hours=1)


async def test_the_first_load_records_every_level_and_an_equal_one_records_nothing(
    journal: Journal,
) -> None:
    assert await journal.automation_levels() == {}
    first = await journal.record_automation_levels(
        {"search": L.AUTO, "checkout": L.NOTIFY}, by=BY, at=NOW
    )
    assert first == [
        AutomationLevelChange(
            service="checkout", level=L.NOTIFY, previous=None, changed_at=NOW, changed_by=BY
        ),
        AutomationLevelChange(
            service="search", level=L.AUTO, previous=None, changed_at=NOW, changed_by=BY
        ),
    ]
    again = await journal.record_automation_levels(
        {"search": L.AUTO, "checkout": L.NOTIFY}, by="rules elsewhere", at=LATER
    )
    assert again == []
    assert await journal.automation_levels() == {change.service: change for change in first}


async def test_a_changed_level_is_recorded_with_the_one_before_and_who(journal: Journal) -> None:
    await journal.record_automation_levels({"checkout": L.NOTIFY, "search": L.AUTO}, by=BY, at=NOW)
    promoted_by = "rules /etc/remediator/rules (sha256:fedcba987654)"
    # payments is new; search is not in this catalog and is left as it was.
    changes = await journal.record_automation_levels(
        {"checkout": L.APPROVE, "payments": L.AUTO}, by=promoted_by, at=LATER
    )
    assert [(c.service, c.previous, c.level) for c in changes] == [
        ("checkout", L.NOTIFY, L.APPROVE),
        ("payments", None, L.AUTO),
    ]
    current = await journal.automation_levels()
    assert {name: (c.level, c.changed_at, c.changed_by) for name, c in current.items()} == {
        "checkout": (L.APPROVE, LATER, promoted_by),
        "payments": (L.AUTO, LATER, promoted_by),
        "search": (L.AUTO, NOW, BY),
    }
    await journal.record_automation_levels(
        {"checkout": L.AUTO}, by=promoted_by, at=LATER + timedelta(days=1)
    )
    history = await journal.automation_level_history(service="checkout")
    assert [(c.previous, c.level) for c in history] == [
        (L.APPROVE, L.AUTO),
        (L.NOTIFY, L.APPROVE),
        (None, L.NOTIFY),
    ]
    assert len(await journal.automation_level_history(service="checkout", limit=1)) == 1
    assert await journal.automation_level_history(service="nobody") == []


async def test_replicas_loading_the_same_catalog_at_once_record_each_change_once(
    replica: OpenReplica,
) -> None:
    a, b = await replica("replica-a"), await replica("replica-b")
    await a.record_automation_levels({"checkout": L.NOTIFY}, by=BY, at=NOW)
    levels = {"checkout": L.APPROVE, **{f"svc-{n}": L.AUTO for n in range(20)}}
    recorded = await asyncio.gather(
        *(j.record_automation_levels(levels, by=BY, at=LATER) for j in (a, b, a, b))
    )
    services = [change.service for changes in recorded for change in changes]
    assert sorted(services) == sorted(levels)  # every change once, by one of the calls
    history = await b.automation_level_history(service="checkout")
    assert [(c.previous, c.level) for c in history] == [(L.NOTIFY, L.APPROVE), (None, L.NOTIFY)]


# -- outcomes ------------------------------------------------------------------------------


async def test_outcomes_count_a_window_of_plans_per_service(journal: Journal) -> None:
    since, until = NOW - timedelta(days=30), NOW + timedelta(days=1)
    for minutes in (2, 10, 4, 30):  # median of 2, 4, 10, 30 minutes: 7 minutes
        await ended_remediation(journal, S.SUCCEEDED, recovered_after=timedelta(minutes=minutes))
    await ended_remediation(journal, S.FAILED)
    await ended_remediation(journal, S.NEEDS_HUMAN)
    await ended_remediation(journal, S.AWAITING_APPROVAL)
    await ended_remediation(journal, S.SKIPPED, reason="automation_notify")
    await ended_remediation(journal, S.SKIPPED, reason="automation_notify")
    # Not plans: skipped for another reason, a dry run, notify_only, no action at all.
    await ended_remediation(journal, S.SKIPPED, reason="cooldown")
    await ended_remediation(journal, S.DRY_RUN)
    await ended_remediation(journal, S.SUCCEEDED, action=ActionKind.NOTIFY_ONLY)
    await ended_remediation(journal, S.SKIPPED, action=None, reason="outside_rollback_window")
    # Outside the window on either side: [since, until).
    await ended_remediation(journal, S.FAILED, created_at=since - timedelta(microseconds=1))
    await ended_remediation(journal, S.FAILED, created_at=until)
    await ended_remediation(journal, S.SUCCEEDED, created_at=since)  # counts: 1 minute
    await ended_remediation(
        journal, S.SUCCEEDED, service="search", recovered_after=timedelta(seconds=90)
    )

    outcomes = await journal.service_outcomes(since=since, until=until)
    checkout = outcomes["checkout"]
    assert dataclasses.replace(checkout, median_seconds_to_recover=None) == ServiceOutcomes(
        service="checkout",
        plans=8,
        succeeded=5,
        failed=1,
        needs_human=1,
        would_have_run=2,
        median_seconds_to_recover=None,
    )
    # 1, 2, 4, 10, 30 minutes: the middle one.
    assert checkout.median_seconds_to_recover == pytest.approx(4 * 60)
    assert outcomes["search"].median_seconds_to_recover == pytest.approx(90)
    assert set(outcomes) == {"checkout", "search"}


async def test_the_median_of_an_even_count_is_the_mean_of_the_middle_two(
    journal: Journal,
) -> None:
    for after in (timedelta(seconds=10), timedelta(seconds=20, microseconds=500)):
        await ended_remediation(journal, S.SUCCEEDED, recovered_after=after)
    await ended_remediation(journal, S.FAILED)
    outcomes = await journal.service_outcomes(since=NOW, until=LATER)
    assert outcomes["checkout"].median_seconds_to_recover == pytest.approx(15.00025)


async def test_a_service_without_a_success_has_no_time_to_recover(journal: Journal) -> None:
    await ended_remediation(journal, S.FAILED, service="payments")
    await ended_remediation(journal, S.SKIPPED, service="payments", reason="automation_notify")
    outcomes = await journal.service_outcomes(since=NOW, until=LATER)
    assert outcomes == {
        "payments": ServiceOutcomes(
            service="payments",
            plans=1,
            succeeded=0,
            failed=1,
            needs_human=0,
            would_have_run=1,
            median_seconds_to_recover=None,
        )
    }
    assert await journal.service_outcomes(since=LATER, until=LATER + timedelta(days=1)) == {}
