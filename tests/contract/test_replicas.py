"""Several replicas on one PostgreSQL journal, no leader: intake, deciding, relaying,
claiming and taking over, all at once from two journals (two "replicas"), each with its
own connections. SQLite serves one replica only, so these run on PostgreSQL alone."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from remediator.domain.lifecycle import RemediationStatus
from remediator.ports import Journal, OutboxMessage
from tests.contract.builders import NOW, decision, message, new_remediation, plant, running, signal
from tests.contract.conftest import OpenReplica, Storage, open_storage

SIGNALS = 1000
CHANNEL = "kafka:remediator.outcomes"


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.integration)])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    async with open_storage(request.param, request, tmp_path) as opened:
        yield opened


async def record_in_requests(journal: Journal, numbers: list[int], size: int) -> list[str]:
    """Record the signals in requests of ``size``, several at once; the ids it stored."""
    requests = [numbers[i : i + size] for i in range(0, len(numbers), size)]
    results = await asyncio.gather(
        *(journal.record_signals([signal(n) for n in request]) for request in requests)
    )
    return [r.signal_id for batch in results for r in batch if not r.duplicate]


async def test_signals_recorded_by_two_replicas_at_once_are_stored_once(
    replica: OpenReplica,
) -> None:
    a, b = await replica("replica-a"), await replica("replica-b")
    numbers = list(range(SIGNALS))
    # Both replicas receive every alert (Alertmanager's HA pair sends to both), in
    # different groupings and orders.
    stored_a, stored_b = await asyncio.gather(
        record_in_requests(a, numbers, 10), record_in_requests(b, numbers[::-1], 7)
    )
    counts = Counter(stored_a + stored_b)
    assert set(counts) == {signal(n).id for n in numbers}
    assert set(counts.values()) == {1}  # each stored by exactly one call, on one replica
    batch = await a.undecided_signals(limit=SIGNALS * 2)
    assert len(batch.signals) == SIGNALS


async def decide_until_done(journal: Journal, name: str, intake: asyncio.Event) -> list[str]:
    """A decider loop: read, decide, compare-and-set; the signal ids it decided."""
    decided: list[str] = []
    while True:
        batch = await journal.undecided_signals(limit=25)
        if not batch.signals:
            if intake.is_set():
                return decided
            await asyncio.sleep(0)
            continue
        records = [
            decision(s.seq, s.signal, new_remediation(s.signal, rid=f"{name}:{s.signal.id}"))
            for s in batch.signals
        ]
        outbox = [
            OutboxMessage(id=f"{name}:{s.signal.id}", channel=CHANNEL, key=None,
                          payload={"signal": s.signal.id}, created_at=NOW)
            for s in batch.signals
        ]  # fmt: skip
        if await journal.record_decisions(
            records, cursor=batch.cursor, through_seq=batch.signals[-1].seq, outbox=outbox
        ):
            decided += [s.signal.id for s in batch.signals]


async def test_two_replicas_deciding_during_intake_decide_each_signal_once(
    replica: OpenReplica,
) -> None:
    a, b = await replica("replica-a"), await replica("replica-b")
    # Two more replicas only take signals in: more commits racing each other.
    c, d = await replica("replica-c"), await replica("replica-d")
    intake_done = asyncio.Event()

    async def intake() -> None:
        # Concurrent commits from every replica: a seq that became visible after a
        # higher one would be skipped by the deciders and never decided.
        numbers = list(range(SIGNALS))
        await asyncio.gather(
            *(
                record_in_requests(journal, numbers[i::4], 3)
                for i, journal in enumerate((a, b, c, d))
            )
        )
        intake_done.set()

    async with asyncio.timeout(120):  # a bound for a broken build, not a measurement
        _, by_a, by_b = await asyncio.gather(
            intake(),
            decide_until_done(a, "replica-a", intake_done),
            decide_until_done(b, "replica-b", intake_done),
        )
    everything = {signal(n).id for n in range(SIGNALS)}
    assert Counter(by_a + by_b) == Counter(everything)  # once each, none skipped
    assert not set(by_a) & set(by_b)
    page = await a.list_remediations(limit=SIGNALS * 2)
    assert sorted(r.signal_id for r in page.items) == sorted(everything)
    assert sum((await a.outbox_backlog()).values()) == SIGNALS


async def relay_until_done(journal: Journal, name: str, log: list[str]) -> list[str]:
    """A relay loop: lease, publish (``log``, shared by the relays), mark; until the
    channel is empty. Returns what this relay leased."""
    leased: list[str] = []
    while await journal.outbox_backlog():
        pending = await journal.pending(
            channel=CHANNEL, limit=7, holder=name, at=NOW, lease_seconds=300
        )
        if not pending:  # the other relay holds the channel
            await asyncio.sleep(0)
            continue
        ids = [p.message.id for p in pending]
        leased += ids
        log += ids
        await journal.mark_published(ids=ids, at=NOW)
    return leased


async def test_two_relays_never_lease_the_same_message(replica: OpenReplica) -> None:
    a, b = await replica("replica-a"), await replica("replica-b")
    await a.enqueue([message(n) for n in range(500)])
    published: list[str] = []
    by_a, by_b = await asyncio.gather(relay_until_done(a, "replica-a", published),
                                      relay_until_done(b, "replica-b", published))  # fmt: skip
    assert Counter(by_a + by_b) == Counter(f"msg-{n}" for n in range(500))
    assert published == [f"msg-{n}" for n in range(500)]  # in order, each once
    assert await a.outbox_backlog() == {}


async def test_one_of_two_replicas_claiming_a_plan_wins(replica: OpenReplica) -> None:
    a, b = await replica("replica-a"), await replica("replica-b")
    rids = [await plant(a) for _ in range(20)]
    for rid in rids:
        won = await asyncio.gather(
            a.claim_remediation(rid, by="replica-a", at=NOW, to=RemediationStatus.RUNNING),
            b.claim_remediation(rid, by="replica-b", at=NOW, to=RemediationStatus.RUNNING),
        )
        assert sorted(won) == [False, True]


async def test_one_of_two_replicas_taking_over_a_claim_wins(replica: OpenReplica) -> None:
    a, b = await replica("replica-a"), await replica("replica-b")
    rids = [await running(a, holder="replica-gone") for _ in range(20)]
    for rid in rids:
        won = await asyncio.gather(
            a.take_over_claim(rid, from_holder="replica-gone", by="replica-a", at=NOW),
            b.take_over_claim(rid, from_holder="replica-gone", by="replica-b", at=NOW),
        )
        assert sorted(won) == [False, True]
        found = await a.get_remediation(rid)
        assert found is not None
        assert found.claimed_by == ("replica-a" if won[0] else "replica-b")


async def test_deciding_the_same_batch_twice_writes_it_once(replica: OpenReplica) -> None:
    a, b = await replica("replica-a"), await replica("replica-b")
    await a.record_signals([signal(n) for n in range(50)])
    batch_a, batch_b = await asyncio.gather(a.undecided_signals(limit=50),
                                            b.undecided_signals(limit=50))  # fmt: skip
    results = await asyncio.gather(
        *(
            journal.record_decisions(
                [
                    decision(s.seq, s.signal, new_remediation(s.signal, rid=f"{name}:{s.seq}"))
                    for s in batch.signals
                ],
                cursor=batch.cursor,
                through_seq=batch.signals[-1].seq,
            )
            for journal, name, batch in ((a, "a", batch_a), (b, "b", batch_b))
        )
    )
    assert sorted(results) == [False, True]
    page = await a.list_remediations(limit=200)
    assert len(page.items) == 50


async def test_a_late_renewal_and_another_replicas_lease_never_both_win(
    replica: OpenReplica,
) -> None:
    """a's lease ran out; a renews it just as b leases the same messages. One of them
    holds them afterwards, never both (the channel's lock orders the two)."""
    a, b = await replica("replica-a"), await replica("replica-b")
    expired = NOW + timedelta(seconds=61)
    outcomes: Counter[str] = Counter()
    for round_ in range(40):
        batch = [message(round_ * 10 + n) for n in range(5)]
        await a.enqueue(batch)
        leased = await a.pending(channel=CHANNEL, limit=5, holder="replica-a", at=NOW,
                                 lease_seconds=60)  # fmt: skip
        assert len(leased) == 5
        renewed, taken = await asyncio.gather(
            a.renew_lease(channel=CHANNEL, ids=[m.id for m in batch], holder="replica-a",
                          at=expired, lease_seconds=60),
            b.pending(channel=CHANNEL, limit=5, holder="replica-b", at=expired,
                      lease_seconds=60),
        )  # fmt: skip
        assert renewed != bool(taken), f"round {round_}: renewed={renewed}, b took {taken}"
        if taken:
            assert all(p.maybe_sent for p in taken)
        outcomes["renewed" if renewed else "taken"] += 1
        await a.mark_published(ids=[m.id for m in batch], at=expired)
    assert sum(outcomes.values()) == 40
