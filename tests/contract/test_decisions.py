"""DecisionStore: the cursor's compare-and-set, and the history the rules weigh."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from remediator.domain.errors import PermanentError
from remediator.domain.lifecycle import RemediationStatus
from remediator.domain.plans import ActionKind
from remediator.domain.signals import Source, Status
from remediator.ports import Journal
from tests.contract.builders import (
    NOW,
    decision,
    message,
    new_remediation,
    plant,
    running,
    signal,
)


async def test_undecided_signals_come_oldest_first_after_the_cursor(journal: Journal) -> None:
    empty = await journal.undecided_signals(limit=10)
    assert (empty.cursor, list(empty.signals)) == (0, [])
    await journal.record_signals([signal(n) for n in range(1, 6)])
    batch = await journal.undecided_signals(limit=3)
    assert batch.cursor == 0
    assert [s.signal.id for s in batch.signals] == [signal(n).id for n in (1, 2, 3)]
    seqs = [s.seq for s in batch.signals]
    assert seqs == sorted(seqs)
    assert batch.signals[0].signal == signal(1)


async def test_a_seq_given_at_intake_reads_back_as_the_signal_handed_in(journal: Journal) -> None:
    """What the decider relies on when it keeps a signal instead of reading it back."""
    handed = [
        signal(1),
        signal(2, source=Source.KAFKA, kind="dev.cdevents.service.deployed.0.2.0", starts_at=None),
        signal(3, source=Source.MANUAL, received_by="alice", service=None),
        replace(signal(4), labels={"alertname": "X", "ünï": "çödé ✓"}, ends_at=NOW),
        # A NUL: PostgreSQL stores U+FFFD, so there the alert must not be kept as given.
        replace(signal(5), labels={"alertname": "X", "pod": "a\x00b"}),
        replace(signal(6), annotations={"summary": "a\x00b"}, raw={"groupKey": "\x00"}),
        replace(signal(7), kind="High\x00", service="check\x00out"),
    ]
    results = await journal.record_signals([*handed, signal(1)])
    assert results[-1].duplicate and results[-1].seq is None
    read_back = {s.seq: s.signal for s in (await journal.undecided_signals(limit=10)).signals}
    given = {r.seq: s for s, r in zip(handed, results, strict=False) if r.seq is not None}
    for seq, kept in given.items():
        assert read_back[seq] == kept
    # Alerts, the bulk of intake, are given back by every journal.
    assert results[0].seq is not None and results[3].seq is not None


async def test_known_signals_never_add_skip_or_reorder_what_follows_the_cursor(
    journal: Journal,
) -> None:
    results = await journal.record_signals([signal(n) for n in range(1, 6)])
    plain = await journal.undecided_signals(limit=3)
    seqs = [s.seq for s in plain.signals]
    # Kept: the 2nd, a signal the journal does not hold (seq far ahead), and one before
    # the cursor would be read; none of them changes which signals come back.
    known = {seqs[1]: signal(2), 10_000: signal(99)}
    hinted = await journal.undecided_signals(limit=3, known=known)
    assert hinted == plain
    assert [s.seq for s in hinted.signals] == seqs
    if results[1].seq is not None:  # the journal says where: the kept one stands in
        assert results[1].seq == seqs[1]
        assert hinted.signals[1].signal is known[seqs[1]]
    batch = plain.signals
    records = [decision(s.seq, s.signal) for s in batch]
    assert await journal.record_decisions(records, cursor=0, through_seq=batch[-1].seq)
    after = await journal.undecided_signals(limit=10, known=known)
    assert [s.signal.id for s in after.signals] == [signal(4).id, signal(5).id]


async def test_recording_decisions_moves_the_cursor_past_them(journal: Journal) -> None:
    await journal.record_signals([signal(n) for n in range(1, 6)])
    batch = await journal.undecided_signals(limit=3)
    records = [decision(s.seq, s.signal) for s in batch.signals]
    through = batch.signals[-1].seq
    assert await journal.record_decisions(records, cursor=batch.cursor, through_seq=through)
    rest = await journal.undecided_signals(limit=10)
    assert rest.cursor == through
    assert [s.signal.id for s in rest.signals] == [signal(4).id, signal(5).id]


async def test_the_backlog_is_what_follows_the_cursor_and_when_its_first_arrived(
    journal: Journal,
) -> None:
    empty = await journal.decision_backlog()
    assert (empty.signals, empty.oldest_received_at) == (0, None)
    arrivals = [NOW + timedelta(seconds=n) for n in range(4)]
    await journal.record_signals([signal(n, received_at=at) for n, at in enumerate(arrivals)])
    # A duplicate adds nothing to decide.
    await journal.record_signals([signal(0, received_at=NOW + timedelta(hours=1))])
    waiting = await journal.decision_backlog()
    assert (waiting.signals, waiting.oldest_received_at) == (4, arrivals[0])

    batch = (await journal.undecided_signals(limit=3)).signals
    records = [decision(s.seq, s.signal) for s in batch]
    assert await journal.record_decisions(records, cursor=0, through_seq=batch[-1].seq)
    left = await journal.decision_backlog()
    assert (left.signals, left.oldest_received_at) == (1, arrivals[3])

    rest = (await journal.undecided_signals(limit=3)).signals
    records = [decision(s.seq, s.signal) for s in rest]
    assert await journal.record_decisions(records, cursor=batch[-1].seq, through_seq=rest[-1].seq)
    done = await journal.decision_backlog()
    assert (done.signals, done.oldest_received_at) == (0, None)


async def test_a_stale_cursor_writes_nothing_and_says_so(journal: Journal) -> None:
    await journal.record_signals([signal(1), signal(2)])
    batch = await journal.undecided_signals(limit=10)
    first, second = batch.signals
    winner = new_remediation(first.signal)
    assert await journal.record_decisions(
        [decision(first.seq, first.signal, winner)], cursor=0, through_seq=first.seq
    )
    loser = new_remediation(second.signal)
    moved = await journal.record_decisions(
        [decision(second.seq, second.signal, loser)],
        cursor=0,  # what it read before the other decider moved the cursor
        through_seq=second.seq,
        outbox=[message(1)],
    )
    assert moved is False
    assert await journal.get_remediation(loser.id) is None
    assert await journal.outbox_backlog() == {}
    after = await journal.undecided_signals(limit=10)
    assert after.cursor == first.seq
    assert [s.signal.id for s in after.signals] == [second.signal.id]


async def test_decisions_their_remediations_and_messages_are_stored_together(
    journal: Journal,
) -> None:
    await journal.record_signals([signal(1), signal(2)])
    batch = await journal.undecided_signals(limit=10)
    one, two = batch.signals
    new = new_remediation(one.signal, status=RemediationStatus.AWAITING_APPROVAL)
    assert await journal.record_decisions(
        [decision(one.seq, one.signal, new), decision(two.seq, two.signal)],
        cursor=batch.cursor,
        through_seq=two.seq,
        outbox=[message(1), message(2, channel="slack")],
    )
    stored = await journal.get_remediation(new.id)
    assert stored is not None
    assert stored.status is RemediationStatus.AWAITING_APPROVAL
    assert (stored.signal_id, stored.service, stored.rule) == (one.signal.id, "checkout",
                                                               "rollback-on-errors")  # fmt: skip
    assert stored.action is ActionKind.ROLLBACK
    assert stored.decision == new.decision
    assert stored.created_at == stored.updated_at == NOW
    assert stored.steps == ()
    assert stored.claimed_by is None and stored.finished_at is None
    assert await journal.outbox_backlog() == {"kafka:remediator.outcomes": 1, "slack": 1}


async def test_a_remediation_is_created_only_in_an_initial_status(journal: Journal) -> None:
    await journal.record_signals([signal(1)])
    batch = await journal.undecided_signals(limit=1)
    (one,) = batch.signals
    bad = new_remediation(one.signal, status=RemediationStatus.SUCCEEDED)
    with pytest.raises(PermanentError):
        await journal.record_decisions(
            [decision(one.seq, one.signal, bad)], cursor=0, through_seq=one.seq
        )
    assert await journal.get_remediation(bad.id) is None
    assert (await journal.undecided_signals(limit=1)).cursor == 0


async def test_service_events_are_newest_first_by_kind_and_source(journal: Journal) -> None:
    await journal.record_signals(
        [
            signal(1, kind="deploy", status=Status.EVENT, source=Source.KAFKA),
            signal(2, kind="deploy", status=Status.EVENT, source=Source.MANUAL),
            signal(3, kind="migration", status=Status.EVENT, source=Source.KAFKA),
            signal(4, kind="deploy", status=Status.EVENT, source=Source.KAFKA, service="other"),
            signal(5, kind="HighErrorRate"),
        ]
    )
    events = await journal.service_events(service="checkout", kinds=["deploy", "migration"])
    assert [e.signal.labels["n"] for e in events] == ["3", "2", "1"]
    limited = await journal.service_events(service="checkout", kinds=["deploy"], limit=1)
    assert [e.signal.labels["n"] for e in limited] == ["2"]
    trusted = await journal.service_events(service="checkout", kinds=["deploy"], sources=["kafka"])
    assert [e.signal.labels["n"] for e in trusted] == ["1"]
    assert await journal.service_events(service="checkout", kinds=[]) == []
    assert await journal.service_events(service="checkout", kinds=["deploy"], sources=[]) == []


async def test_firing_alert_times_fall_in_the_half_open_window(journal: Journal) -> None:
    times = [NOW + timedelta(minutes=m) for m in (0, 5, 10)]
    await journal.record_signals(
        [signal(n, starts_at=t) for n, t in enumerate(times)]
        + [signal(9, starts_at=times[1], status=Status.RESOLVED)]
        + [signal(10, starts_at=times[1], kind="Other")]
    )
    found = await journal.firing_alert_times(
        service="checkout", kinds=["HighErrorRate"], since=times[0], until=times[2]
    )
    assert sorted(found) == times[:2]
    assert all(t.utcoffset() == timedelta(0) for t in found)
    assert (
        await journal.firing_alert_times(
            service="checkout", kinds=[], since=times[0], until=times[2]
        )
        == []
    )


async def test_remediation_history_leaves_out_skipped_ones(journal: Journal) -> None:
    early = await plant(journal, created_at=NOW - timedelta(hours=2))
    kept = await plant(journal, status=RemediationStatus.PLANNED)
    await plant(journal, status=RemediationStatus.SKIPPED)
    other = await plant(journal, signal={"service": "payments"})
    history = await journal.remediation_history(service="checkout", since=NOW - timedelta(hours=1))
    assert [h.id for h in history] == [kept]
    (summary,) = history
    assert summary.status is RemediationStatus.PLANNED
    assert summary.action is ActionKind.ROLLBACK
    assert (summary.automated, summary.manual, summary.created_at) == (True, False, NOW)
    assert early not in [h.id for h in history] and other not in [h.id for h in history]


async def test_automated_actions_count_what_acted_or_will(journal: Journal) -> None:
    acted = await plant(journal)
    for status in (
        RemediationStatus.SKIPPED,
        RemediationStatus.DRY_RUN,
        RemediationStatus.AWAITING_APPROVAL,
    ):
        await plant(journal, status=status)
    await plant(journal, automated=False)
    await plant(journal, created_at=NOW - timedelta(days=1))
    assert acted
    # Never changed: everything counts.
    assert len((await journal.circuit_inputs()).automated_action_times) == 2
    # Only what came after the breaker last changed.
    await journal.set_circuit(open=False, reason="reset", at=NOW - timedelta(hours=1), by="al")
    inputs = await journal.circuit_inputs()
    assert inputs.automated_action_times == (NOW,)
    assert (inputs.record.open, inputs.record.changed_by) == (False, "al")


async def test_consecutive_failures_count_back_to_the_last_success(journal: Journal) -> None:
    async def ended(status: RemediationStatus, minutes: int) -> None:
        rid = await running(journal)
        await journal.finish_remediation(
            rid, holder="replica-a", status=status, reason=None,
            at=NOW + timedelta(minutes=minutes),
        )  # fmt: skip

    async def failures() -> int:
        return (await journal.circuit_inputs()).consecutive_failures

    assert await failures() == 0
    await ended(RemediationStatus.FAILED, 1)
    await ended(RemediationStatus.SUCCEEDED, 2)
    await ended(RemediationStatus.FAILED, 3)
    await ended(RemediationStatus.NEEDS_HUMAN, 4)  # neither breaks nor extends the run
    await ended(RemediationStatus.FAILED, 5)
    assert await failures() == 2
    await journal.set_circuit(open=True, reason="2 failures", at=NOW + timedelta(minutes=4))
    assert await failures() == 1  # a failure before the breaker changed no longer counts
    assert (await journal.circuit_inputs()).record.open
