"""The outbox relay publishes each message once, even when a relay dies or is frozen
between leasing, publishing and marking: the real SQLite journal, with fakes of our
own ports for the channel (a shared record of what was sent) and for a journal that
fails or pauses at one call."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from remediator.domain.errors import TemporaryError
from remediator.engine.outbox import OutboxRelay
from remediator.journal.sqlite import SqliteJournal
from remediator.ports import OutboxMessage, PendingMessage
from tests.unit.journal_helpers import outbox_messages

CHANNEL = "kafka:outcomes"
LEASE = 60.0
NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Channel:
    """What reached the channel, in order, whoever sent it (shared by the relays)."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def counts(self) -> Counter[str]:
        return Counter(self.sent)


class ChannelPublisher:
    """One replica's publisher onto the shared channel."""

    channel = CHANNEL

    def __init__(
        self, on: Channel, *, fail_after: int | None = None, unreadable: bool = False
    ) -> None:
        self._on = on
        self._fail_after = fail_after  # send this many records, then fail the batch
        self._unreadable = unreadable
        self.asked: list[list[str]] = []  # already_published calls
        self.batches: list[list[str]] = []

    async def publish(self, messages: Sequence[OutboxMessage]) -> None:
        self.batches.append([m.id for m in messages])
        for n, m in enumerate(messages):
            if self._fail_after is not None and n >= self._fail_after:
                self._fail_after = None
                raise TemporaryError("broker went away mid-batch", delay=0.5)
            self._on.sent.append(m.id)

    async def already_published(self, messages: Sequence[OutboxMessage]) -> set[str]:
        self.asked.append([m.id for m in messages])
        if self._unreadable:
            raise TemporaryError("cannot read the topic back", delay=0.5)
        return {m.id for m in messages} & set(self._on.sent)


class Observer:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def backlog(self, counts: Mapping[str, int]) -> None:
        pass

    def published(self, *, channel: str, count: int) -> None:
        self.calls.append(("published", count))

    def failed(self, *, channel: str) -> None:
        self.calls.append(("failed", 1))

    def found_published(self, *, channel: str, count: int) -> None:
        self.calls.append(("found_published", count))

    def lease_lost(self, *, channel: str) -> None:
        self.calls.append(("lease_lost", 1))


class Crashing:
    """The real journal, except that ``mark_published`` fails (the replica died right
    after the ack) or ``renew_lease`` waits at a gate (the replica was frozen there)."""

    def __init__(self, journal: SqliteJournal, *, lose_marks: bool = False) -> None:
        self._journal = journal
        self._lose_marks = lose_marks
        self.at_gate = asyncio.Event()
        self.gate: asyncio.Event | None = None

    async def enqueue(self, messages: Sequence[OutboxMessage]) -> None:
        await self._journal.enqueue(messages)

    async def pending(
        self, *, channel: str, limit: int, holder: str, at: datetime, lease_seconds: float
    ) -> list[PendingMessage]:
        return await self._journal.pending(
            channel=channel, limit=limit, holder=holder, at=at, lease_seconds=lease_seconds
        )

    async def renew_lease(
        self, *, channel: str, ids: Sequence[str], holder: str, at: datetime,
        lease_seconds: float,
    ) -> bool:  # fmt: skip
        if self.gate is not None:
            self.at_gate.set()
            await self.gate.wait()
        return await self._journal.renew_lease(
            channel=channel, ids=ids, holder=holder, at=at, lease_seconds=lease_seconds
        )

    async def mark_published(self, *, ids: Sequence[str], at: datetime) -> None:
        if self._lose_marks:
            raise TemporaryError("journal unreachable", delay=1.0)
        await self._journal.mark_published(ids=ids, at=at)

    async def mark_failed_attempt(
        self, *, ids: Sequence[str], error: str, holder: str | None = None
    ) -> None:
        await self._journal.mark_failed_attempt(ids=ids, error=error, holder=holder)

    async def mark_dead(self, *, ids: Sequence[str], error: str, at: datetime) -> None:
        await self._journal.mark_dead(ids=ids, error=error, at=at)

    async def outbox_backlog(self) -> dict[str, int]:
        return await self._journal.outbox_backlog()


def message(n: int) -> OutboxMessage:
    return OutboxMessage(
        id=f"rem_{n}:planned", channel=CHANNEL, key="checkout", payload={"id": f"rem_{n}:planned"},
        created_at=NOW,
    )  # fmt: skip


def ids(*ns: int) -> list[str]:
    return [f"rem_{n}:planned" for n in ns]


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[SqliteJournal]:
    j = SqliteJournal(path=tmp_path / "journal.db")
    await j.open()
    try:
        yield j
    finally:
        await j.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def relay(
    journal: object, publisher: ChannelPublisher, holder: str, clock: Clock,
    observer: Observer | None = None,
) -> OutboxRelay:  # fmt: skip
    return OutboxRelay(
        journal=journal, publisher=publisher, holder=holder, clock=clock,  # type: ignore[arg-type]
        lease_seconds=LEASE, observer=observer,
    )  # fmt: skip


async def test_a_batch_published_but_never_marked_is_found_on_the_channel_not_sent_again(
    journal: SqliteJournal, clock: Clock
) -> None:
    await journal.enqueue([message(n) for n in range(3)])
    channel = Channel()
    a = relay(Crashing(journal, lose_marks=True), ChannelPublisher(channel), "replica-a", clock)
    with pytest.raises(TemporaryError):
        await a.run_once()  # published, then the mark failed: the replica is gone
    assert channel.sent == ids(0, 1, 2)

    clock.advance(LEASE + 1)
    b_publisher, observer = ChannelPublisher(channel), Observer()
    b = relay(journal, b_publisher, "replica-b", clock, observer)
    assert await b.run_once() == 3
    assert b_publisher.asked == [ids(0, 1, 2)]
    assert b_publisher.batches == []  # nothing sent again
    assert channel.counts() == Counter(ids(0, 1, 2))
    assert observer.calls == [("found_published", 3)]
    assert await journal.outbox_backlog() == {}


async def test_the_same_replica_restarted_takes_its_own_lease_back_and_checks_first(
    journal: SqliteJournal, clock: Clock
) -> None:
    await journal.enqueue([message(n) for n in range(2)])
    channel = Channel()
    before = relay(Crashing(journal, lose_marks=True), ChannelPublisher(channel), "replica-a",
                   clock)  # fmt: skip
    with pytest.raises(TemporaryError):
        await before.run_once()
    # Restarted at once (SIGKILL, then the container restarts): its lease still holds.
    clock.advance(5)
    after_publisher = ChannelPublisher(channel)
    after = relay(journal, after_publisher, "replica-a", clock)
    assert await after.run_once() == 2
    assert after_publisher.asked == [ids(0, 1)]
    assert after_publisher.batches == []
    assert channel.counts() == Counter(ids(0, 1))


async def test_a_relay_killed_before_publishing_leaves_the_batch_to_another_that_publishes_it(
    journal: SqliteJournal, clock: Clock
) -> None:
    await journal.enqueue([message(n) for n in range(3)])
    # Killed right after leasing: nothing reached the channel.
    await journal.pending(channel=CHANNEL, limit=10, holder="replica-a", at=clock(),
                          lease_seconds=LEASE)  # fmt: skip
    channel = Channel()
    b_publisher = ChannelPublisher(channel)
    b = relay(journal, b_publisher, "replica-b", clock)
    assert await b.run_once() == 0  # a's lease holds the channel
    assert b_publisher.asked == b_publisher.batches == []

    clock.advance(LEASE + 1)
    assert await b.run_once() == 3
    assert b_publisher.asked == [ids(0, 1, 2)]  # looked first, found none
    assert b_publisher.batches == [ids(0, 1, 2)]
    assert channel.sent == ids(0, 1, 2)
    assert await journal.outbox_backlog() == {}


async def test_only_what_is_missing_from_the_channel_is_published_in_order(
    journal: SqliteJournal, clock: Clock
) -> None:
    await journal.enqueue([message(n) for n in range(4)])
    await journal.pending(channel=CHANNEL, limit=10, holder="replica-a", at=clock(),
                          lease_seconds=LEASE)  # fmt: skip
    channel = Channel()
    channel.sent.append(ids(1)[0])  # a got one record out before it died
    clock.advance(LEASE + 1)
    b_publisher = ChannelPublisher(channel)
    b = relay(journal, b_publisher, "replica-b", clock)
    assert await b.run_once() == 4
    assert b_publisher.batches == [ids(0, 2, 3)]
    assert channel.counts() == Counter(ids(0, 1, 2, 3))


async def test_a_fresh_batch_is_published_without_looking_at_the_channel(
    journal: SqliteJournal, clock: Clock
) -> None:
    await journal.enqueue([message(n) for n in range(2)])
    channel, observer = Channel(), Observer()
    publisher = ChannelPublisher(channel)
    assert await relay(journal, publisher, "replica-a", clock, observer).run_once() == 2
    assert publisher.asked == []
    assert channel.sent == ids(0, 1)
    assert observer.calls == [("published", 2)]


async def test_a_batch_that_failed_midway_is_completed_without_repeating_what_got_through(
    journal: SqliteJournal, clock: Clock
) -> None:
    await journal.enqueue([message(n) for n in range(3)])
    channel = Channel()
    publisher = ChannelPublisher(channel, fail_after=1)
    a = relay(journal, publisher, "replica-a", clock)
    with pytest.raises(TemporaryError):
        await a.run_once()
    assert channel.sent == ids(0)
    [first, *_] = await outbox_messages(journal, CHANNEL)
    assert (first.attempts, first.maybe_sent) == (1, True)
    # The failure released the lease: another replica may retry at once.
    b_publisher = ChannelPublisher(channel)
    assert await relay(journal, b_publisher, "replica-b", clock).run_once() == 3
    assert b_publisher.asked == [ids(0, 1, 2)]
    assert b_publisher.batches == [ids(1, 2)]
    assert channel.counts() == Counter(ids(0, 1, 2))


async def test_nothing_is_published_again_while_the_channel_cannot_be_read_back(
    journal: SqliteJournal, clock: Clock
) -> None:
    await journal.enqueue([message(n) for n in range(2)])
    await journal.pending(channel=CHANNEL, limit=1, holder="replica-a", at=clock(),
                          lease_seconds=LEASE)  # fmt: skip
    clock.advance(LEASE + 1)
    channel, observer = Channel(), Observer()
    blind = ChannelPublisher(channel, unreadable=True)
    with pytest.raises(TemporaryError, match="read the topic back"):
        await relay(journal, blind, "replica-b", clock, observer).run_once()
    assert blind.asked == [ids(0)]  # only the one a relay took before is in doubt
    assert blind.batches == [] and channel.sent == []
    assert observer.calls == [("failed", 1)]
    waiting = await outbox_messages(journal, CHANNEL)
    assert [(p.message.id, p.attempts) for p in waiting] == [(ids(0)[0], 1), (ids(1)[0], 1)]
    # The batch was released: the next pass (any replica) may try at once.
    seeing = ChannelPublisher(channel)
    assert await relay(journal, seeing, "replica-c", clock).run_once() == 2
    assert channel.sent == ids(0, 1)


async def test_a_relay_frozen_until_its_lease_ran_out_does_not_publish_when_it_resumes(
    journal: SqliteJournal, clock: Clock
) -> None:
    await journal.enqueue([message(n) for n in range(3)])
    channel, observer = Channel(), Observer()
    frozen = Crashing(journal)
    frozen.gate = asyncio.Event()
    a_publisher = ChannelPublisher(channel)
    a = asyncio.create_task(relay(frozen, a_publisher, "replica-a", clock, observer).run_once())
    try:
        await asyncio.wait_for(frozen.at_gate.wait(), 10)  # leased, about to publish: SIGSTOP

        clock.advance(LEASE + 1)
        b_publisher = ChannelPublisher(channel)
        assert await relay(journal, b_publisher, "replica-b", clock).run_once() == 3
        assert b_publisher.asked == [ids(0, 1, 2)]
        assert channel.sent == ids(0, 1, 2)

        frozen.gate.set()  # SIGCONT
        assert await asyncio.wait_for(a, 10) == 0
    finally:
        frozen.gate.set()
        await asyncio.gather(a, return_exceptions=True)
    assert a_publisher.batches == []
    assert channel.counts() == Counter(ids(0, 1, 2))
    assert observer.calls == [("lease_lost", 1)]


async def test_a_relay_frozen_only_briefly_still_holds_its_lease_and_publishes(
    journal: SqliteJournal, clock: Clock
) -> None:
    await journal.enqueue([message(n) for n in range(2)])
    channel = Channel()
    paused = Crashing(journal)
    paused.gate = asyncio.Event()
    a = asyncio.create_task(relay(paused, ChannelPublisher(channel), "replica-a", clock).run_once())
    try:
        await asyncio.wait_for(paused.at_gate.wait(), 10)
        clock.advance(LEASE - 1)
        b_publisher = ChannelPublisher(channel)
        assert await relay(journal, b_publisher, "replica-b", clock).run_once() == 0
        paused.gate.set()
        assert await asyncio.wait_for(a, 10) == 2
    finally:
        paused.gate.set()
        await asyncio.gather(a, return_exceptions=True)
    assert b_publisher.asked == b_publisher.batches == []
    assert channel.sent == ids(0, 1)
