"""AutomationLevels and ServiceStats: level changes with who made them, and a service's
outcomes over a window (GET /api/v1/services)."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime, timedelta

import pytest

from remediator.domain.automation import AutomationLevel
from remediator.domain.lifecycle import RemediationStatus
from remediator.domain.plans import ActionKind
from remediator.ports import AutomationLevelChange, Journal, ServiceOutcomes
from tests.contract.builders import NOW, decision, new_remediation, signal
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
_n = iter(range(50_000, 60_000))


async def remediation_in(
    journal: Journal,
    status: RemediationStatus,
    *,
    service: str = "checkout",
    created_at: datetime = NOW,
    recovered_after: timedelta | None = None,
    action: ActionKind | None = ActionKind.ROLLBACK,
    reason: str | None = None,
) -> str:
    """One remediation of ``service`` created at ``created_at`` that ended in ``status``
    (``recovered_after`` its creation, for an end)."""
    n = next(_n)
    await journal.record_signals([signal(n, service=service)])
    batch = await journal.undecided_signals(limit=10)
    (stored,) = batch.signals
    initial = status if status.initial else S.PLANNED
    new = new_remediation(stored.signal, status=initial, action=action, created_at=created_at)
    if reason is not None:
        new = dataclasses.replace(new, reason=reason)
    assert await journal.record_decisions(
        [decision(stored.seq, stored.signal, new)], cursor=batch.cursor, through_seq=stored.seq
    )
    if not status.initial:
        end = new.created_at + (recovered_after or timedelta(minutes=1))
        assert await journal.claim_remediation(new.id, by="replica-a", at=end, to=S.RUNNING)
        await journal.finish_remediation(new.id, holder="replica-a", status=status, reason=None,
                                         at=end)  # fmt: skip
    return new.id


async def test_outcomes_count_a_window_of_plans_per_service(journal: Journal) -> None:
    since, until = NOW - timedelta(days=30), NOW + timedelta(days=1)
    for minutes in (2, 10, 4, 30):  # median of 2, 4, 10, 30 minutes: 7 minutes
        await remediation_in(journal, S.SUCCEEDED, recovered_after=timedelta(minutes=minutes))
    await remediation_in(journal, S.FAILED)
    await remediation_in(journal, S.NEEDS_HUMAN)
    await remediation_in(journal, S.AWAITING_APPROVAL)
    await remediation_in(journal, S.SKIPPED, reason="automation_notify")
    await remediation_in(journal, S.SKIPPED, reason="automation_notify")
    # Not plans: skipped for another reason, a dry run, notify_only, no action at all.
    await remediation_in(journal, S.SKIPPED, reason="cooldown")
    await remediation_in(journal, S.DRY_RUN)
    await remediation_in(journal, S.SUCCEEDED, action=ActionKind.NOTIFY_ONLY)
    await remediation_in(journal, S.SKIPPED, action=None, reason="outside_rollback_window")
    # Outside the window on either side: [since, until).
    await remediation_in(journal, S.FAILED, created_at=since - timedelta(microseconds=1))
    await remediation_in(journal, S.FAILED, created_at=until)
    await remediation_in(journal, S.SUCCEEDED, created_at=since)  # counts: 1 minute
    await remediation_in(
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
        await remediation_in(journal, S.SUCCEEDED, recovered_after=after)
    await remediation_in(journal, S.FAILED)
    outcomes = await journal.service_outcomes(since=NOW, until=LATER)
    assert outcomes["checkout"].median_seconds_to_recover == pytest.approx(15.00025)


async def test_a_service_without_a_success_has_no_time_to_recover(journal: Journal) -> None:
    await remediation_in(journal, S.FAILED, service="payments")
    await remediation_in(journal, S.SKIPPED, service="payments", reason="automation_notify")
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
