"""Gauges of journal state, over the real SQLite journal: plans awaiting approval, the
circuit breaker and deciding's backlog, read on a timer and set on the daemon's
registry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from remediator.domain.approvals import ApprovalConfig, ApprovalRequest, policy_for
from remediator.domain.errors import TemporaryError
from remediator.domain.lifecycle import RemediationStatus
from remediator.engine.gauges import JournalGauges, JournalState
from remediator.journal.sqlite import SqliteJournal
from remediator.metrics import Metrics
from tests.contract.builders import NOW, decision, plant, signal


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[SqliteJournal]:
    j = SqliteJournal(path=tmp_path / "journal.db")
    await j.open()
    yield j
    await j.close()


async def waiting(journal: SqliteJournal) -> str:
    policy = policy_for(approvers=("tech-lead",), response_time=timedelta(minutes=30),
                        emergency=False, config=ApprovalConfig())  # fmt: skip
    request = ApprovalRequest(policy=policy, requested_at=NOW, requester="rita")
    return await plant(journal, status=RemediationStatus.AWAITING_APPROVAL, approval=request)


def set_gauges(metrics: Metrics, state: JournalState) -> None:
    # As the runtime does (tests/e2e/test_metrics.py scrapes a daemon's).
    metrics.approvals_waiting.set(state.approvals_waiting)
    metrics.circuit_open.set(1 if state.circuit_open else 0)
    metrics.undecided_signals.set(state.undecided_signals)
    metrics.undecided_age.set(state.undecided_seconds)


async def test_counts_waiting_plans_and_reads_the_circuit(journal: SqliteJournal) -> None:
    metrics = Metrics()
    # Pages of two: five waiting plans take three reads.
    gauges = JournalGauges(journal=journal, on_state=lambda s: set_gauges(metrics, s), page_size=2)
    assert await gauges.refresh() == JournalState(approvals_waiting=0, circuit_open=False)

    # Plans in other statuses do not count.
    first = [await waiting(journal) for _ in range(5)]
    await plant(journal, status=RemediationStatus.PLANNED)
    await journal.cancel_remediation(first[0], by="rita", at=NOW)
    await journal.set_circuit(open=True, reason="3 failures in a row", at=NOW)

    assert await gauges.refresh() == JournalState(approvals_waiting=4, circuit_open=True)
    assert metrics.registry.get_sample_value("remediator_approvals_waiting") == 4
    assert metrics.registry.get_sample_value("remediator_circuit_open") == 1

    await journal.set_circuit(open=False, reason=None, at=NOW, by="oncall")
    await gauges.refresh()
    assert metrics.registry.get_sample_value("remediator_circuit_open") == 0


async def test_the_backlog_counts_undecided_signals_and_how_long_the_first_waited(
    journal: SqliteJournal,
) -> None:
    metrics = Metrics()
    now = [NOW]
    gauges = JournalGauges(journal=journal, on_state=lambda s: set_gauges(metrics, s),
                           clock=lambda: now[0])  # fmt: skip
    assert (await gauges.refresh()).undecided_signals == 0

    await journal.record_signals(
        [signal(n, received_at=NOW + timedelta(seconds=n)) for n in range(3)]
    )
    now[0] = NOW + timedelta(seconds=42.5)
    state = await gauges.refresh()
    assert (state.undecided_signals, state.undecided_seconds) == (3, 42.5)
    assert metrics.registry.get_sample_value("remediator_undecided_signals") == 3
    assert metrics.registry.get_sample_value("remediator_undecided_age_seconds") == 42.5

    first = (await journal.undecided_signals(limit=1)).signals
    assert await journal.record_decisions([decision(first[0].seq, first[0].signal)], cursor=0,
                                          through_seq=first[0].seq)  # fmt: skip
    state = await gauges.refresh()
    assert (state.undecided_signals, state.undecided_seconds) == (2, 41.5)

    # A signal received by a replica whose clock runs ahead has not waited less than 0.
    now[0] = NOW
    assert (await gauges.refresh()).undecided_seconds == 0

    rest = (await journal.undecided_signals(limit=5)).signals
    records = [decision(s.seq, s.signal) for s in rest]
    assert await journal.record_decisions(records, cursor=first[0].seq, through_seq=rest[-1].seq)
    now[0] = NOW + timedelta(hours=1)
    assert await gauges.refresh() == JournalState(approvals_waiting=0, circuit_open=False)
    assert metrics.registry.get_sample_value("remediator_undecided_signals") == 0
    assert metrics.registry.get_sample_value("remediator_undecided_age_seconds") == 0


async def test_a_backlog_over_a_minute_old_is_logged_once_a_minute_until_it_clears(
    journal: SqliteJournal, caplog: pytest.LogCaptureFixture
) -> None:
    now = [NOW]
    gauges = JournalGauges(journal=journal, on_state=lambda _: None, clock=lambda: now[0])
    await journal.record_signals([signal(n) for n in range(3)])

    def said() -> list[tuple[str, str]]:
        lines = [(r.levelname, r.getMessage()) for r in caplog.records
                 if r.name == "remediator.engine.gauges"]  # fmt: skip
        caplog.clear()
        return lines

    caplog.set_level("INFO", logger="remediator.engine.gauges")
    for seconds, expected in [
        (59, []),  # a storm's queue: nothing to say
        (60, [("WARNING", "deciding is behind: 3 signal(s) journaled and not yet decided, "
                          "the oldest for 60s (the decision engine stopped, or a storm "
                          "outruns it); remediations start that much late")]),
        (75, []),  # said a moment ago
        (119, []),
        (120, [("WARNING", "deciding is behind: 3 signal(s) journaled and not yet decided, "
                           "the oldest for 120s (the decision engine stopped, or a storm "
                           "outruns it); remediations start that much late")]),
    ]:  # fmt: skip
        now[0] = NOW + timedelta(seconds=seconds)
        await gauges.refresh()
        assert said() == expected, seconds

    batch = (await journal.undecided_signals(limit=5)).signals
    records = [decision(s.seq, s.signal) for s in batch]
    assert await journal.record_decisions(records, cursor=0, through_seq=batch[-1].seq)
    await gauges.refresh()
    assert said() == [("INFO", "deciding caught up: 0 signal(s) wait, the oldest for 0.0s")]
    await gauges.refresh()
    assert said() == []


class Unavailable:
    async def decision_backlog(self) -> None:
        raise TemporaryError("journal unavailable")

    async def circuit(self) -> None:
        raise TemporaryError("journal unavailable")

    async def list_remediations(self, **_: object) -> None:
        raise TemporaryError("journal unavailable")


async def test_a_failed_read_keeps_the_last_values_and_the_timer_goes_on() -> None:
    seen: list[JournalState] = []
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 3:
            raise asyncio.CancelledError

    gauges = JournalGauges(journal=Unavailable(), on_state=seen.append,  # type: ignore[arg-type]
                           interval_seconds=15, sleep=sleep)  # fmt: skip
    with pytest.raises(asyncio.CancelledError):
        await gauges.run()
    assert seen == []  # nothing set: the gauges keep what they had
    assert slept == [15, 15, 15]
