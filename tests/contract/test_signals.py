"""SignalStore: idempotent intake, paging, lookup, prune."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

import pytest

from remediator.domain.errors import InvalidInput
from remediator.domain.signals import Source, Status
from remediator.ports import Journal
from tests.contract.builders import NOW, Clock, decision, signal
from tests.contract.conftest import OpenReplica, Storage


async def test_a_new_key_is_stored_and_a_replay_is_a_duplicate(journal: Journal) -> None:
    first = await journal.record_signals([signal(1), signal(2)])
    again = await journal.record_signals([signal(2), signal(3)])
    assert [(r.signal_id, r.duplicate) for r in first] == [
        (signal(1).id, False),
        (signal(2).id, False),
    ]
    assert [(r.signal_id, r.duplicate) for r in again] == [
        (signal(2).id, True),
        (signal(3).id, False),
    ]
    page = await journal.list_signals(limit=10)
    assert sorted(item["id"] for item in page.items) == sorted(signal(n).id for n in (1, 2, 3))


async def test_the_same_key_twice_in_one_call_is_stored_once(journal: Journal) -> None:
    results = await journal.record_signals([signal(1), signal(1), signal(2)])
    assert [r.duplicate for r in results] == [False, True, False]
    assert len((await journal.list_signals(limit=10)).items) == 2


async def test_an_empty_call_stores_nothing(journal: Journal) -> None:
    assert await journal.record_signals([]) == []


async def test_concurrent_calls_store_each_key_once_and_lose_nothing(journal: Journal) -> None:
    # 50 requests of 20 signals, half of each request's keys shared with its neighbour.
    requests = [[signal(r * 10 + i) for i in range(20)] for r in range(50)]
    results = await asyncio.gather(*(journal.record_signals(req) for req in requests))
    stored = [res.signal_id for batch in results for res in batch if not res.duplicate]
    expected = {s.id for req in requests for s in req}
    assert sorted(stored) == sorted(expected)  # each key stored by exactly one call
    for req, batch in zip(requests, results, strict=True):
        assert [res.signal_id for res in batch] == [s.id for s in req]
    undecided = await journal.undecided_signals(limit=10_000)
    assert {s.signal.id for s in undecided.signals} == expected


async def test_a_signal_reads_back_as_it_was_recorded(journal: Journal) -> None:
    original = replace(
        signal(7, source=Source.KAFKA, status=Status.EVENT, kind="deploy", starts_at=None),
        received_by="deploy-bot",
    )
    await journal.record_signals([original])
    assert await journal.get_signal(original.id) == original
    assert await journal.get_signal("sig_unknown") is None
    (item,) = (await journal.list_signals(limit=1)).items
    assert item == {
        "id": original.id,
        "source": "kafka",
        "kind": "deploy",
        "status": "event",
        "service": "checkout",
        "namespace": "shop",
        "routable": True,
        "labels": dict(original.labels),
        "annotations": dict(original.annotations),
        "starts_at": None,
        "ends_at": None,
        "received_at": "2026-11-27T10:00:00.000000Z",
        "received_by": "deploy-bot",
    }


async def test_signals_page_newest_first_and_filter_by_service(journal: Journal) -> None:
    await journal.record_signals(
        [signal(n, service="checkout" if n % 2 else "payments") for n in range(1, 8)]
    )
    seen, cursor = [], None
    while True:
        page = await journal.list_signals(service="checkout", limit=2, cursor=cursor)
        assert len(page.item_cursors) == len(page.items)
        seen += [item["labels"]["n"] for item in page.items]
        if page.next_cursor is None:
            break
        assert page.next_cursor == page.item_cursors[-1]
        cursor = page.next_cursor
    assert seen == ["7", "5", "3", "1"]
    everything = await journal.list_signals(limit=100)
    assert [item["labels"]["n"] for item in everything.items] == [str(n) for n in range(7, 0, -1)]
    assert everything.next_cursor is None


async def test_a_page_continues_after_any_item_cursor(journal: Journal) -> None:
    await journal.record_signals([signal(n) for n in range(1, 6)])
    first = await journal.list_signals(limit=5)
    rest = await journal.list_signals(limit=5, cursor=first.item_cursors[1])
    assert [i["labels"]["n"] for i in rest.items] == ["3", "2", "1"]


@pytest.mark.parametrize("cursor", ["abc", "-1", "1" * 30, "²"])
async def test_a_cursor_this_server_never_issued_is_invalid_input(
    journal: Journal, cursor: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        await journal.list_signals(cursor=cursor)
    assert caught.value.where == "cursor"


@pytest.mark.parametrize("limit", [0, -5])
async def test_a_page_size_below_one_is_invalid_input(journal: Journal, limit: int) -> None:
    with pytest.raises(InvalidInput) as caught:
        await journal.list_signals(limit=limit)
    assert caught.value.where == "limit"


async def test_prune_forgets_old_signals_and_their_keys(journal: Journal, clock: Clock) -> None:
    old = NOW - timedelta(days=8)
    await journal.record_signals([signal(n, received_at=old) for n in range(1, 4)])
    await journal.record_signals([signal(n) for n in range(4, 6)])
    clock.now = NOW + timedelta(hours=1)
    assert await journal.prune(older_than_seconds=7 * 86400) == 3
    left = await journal.list_signals(limit=10)
    assert sorted(i["labels"]["n"] for i in left.items) == ["4", "5"]
    assert await journal.get_signal(signal(1).id) is None
    # The key is forgotten: the same alert is new again.
    (again,) = await journal.record_signals([signal(1, received_at=clock.now)])
    assert not again.duplicate
    assert await journal.prune(older_than_seconds=7 * 86400) == 0


async def decide_all(journal: Journal) -> None:
    batch = await journal.undecided_signals(limit=100_000)
    records = [decision(s.seq, s.signal) for s in batch.signals]
    assert await journal.record_decisions(records, cursor=batch.cursor,
                                          through_seq=batch.signals[-1].seq)  # fmt: skip


async def test_prune_takes_the_decisions_of_the_signals_it_forgets(
    storage: Storage, replica: OpenReplica, clock: Clock
) -> None:
    journal = await replica()
    old = NOW - timedelta(days=8)
    await journal.record_signals([signal(n, received_at=old) for n in range(1, 4)])
    await journal.record_signals([signal(4)])
    await journal.record_signals([signal(5, received_at=old)])  # the clock stepped back
    await journal.record_signals([signal(6)])
    await decide_all(journal)
    decided = sorted(row[0] for row in await storage.rows("SELECT signal_seq FROM decisions"))
    assert len(decided) == 6
    clock.now = NOW + timedelta(hours=1)
    assert await journal.prune(older_than_seconds=7 * 86400) == 4
    # The three oldest go with their signals; the 5th's waits behind the kept 4th.
    left = sorted(row[0] for row in await storage.rows("SELECT signal_seq FROM decisions"))
    assert left == decided[3:]
    assert [s.id for s in (await journal.undecided_signals(limit=10)).signals] == []
    assert sorted(i["labels"]["n"] for i in (await journal.list_signals()).items) == ["4", "6"]

    # With every signal gone, so is every decision, however many batches it takes.
    clock.now = NOW + timedelta(days=9)
    await journal.record_signals([signal(n, received_at=old) for n in range(100, 5_200)])
    await decide_all(journal)
    assert await journal.prune(older_than_seconds=86400) == 5_100 + 2
    assert await storage.rows("SELECT signal_seq FROM decisions") == []
    assert (await journal.list_signals()).items == []


async def test_prune_follows_the_injected_clock(journal: Journal, clock: Clock) -> None:
    await journal.record_signals([signal(1)])
    clock.now = NOW + timedelta(seconds=59)
    assert await journal.prune(older_than_seconds=60) == 0
    clock.now = NOW + timedelta(seconds=61)
    assert await journal.prune(older_than_seconds=60) == 1


async def test_prune_keeps_a_newer_signal_among_old_ones(journal: Journal, clock: Clock) -> None:
    old = NOW - timedelta(days=10)
    await journal.record_signals([signal(1, received_at=old)])
    await journal.record_signals([signal(2)])  # the clock stepped forward, then back
    await journal.record_signals([signal(3, received_at=old)])
    assert await journal.prune(older_than_seconds=86400) == 2
    assert [i["labels"]["n"] for i in (await journal.list_signals()).items] == ["2"]


async def test_prune_deletes_more_than_one_batch(replica: OpenReplica, clock: Clock) -> None:
    journal = await replica()
    old = NOW - timedelta(days=10)
    await journal.record_signals([signal(n, received_at=old) for n in range(12_000)])
    await journal.record_signals([signal(99_999)])
    assert await journal.prune(older_than_seconds=86400) == 12_000
    assert len((await journal.list_signals(limit=10)).items) == 1
