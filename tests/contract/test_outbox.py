"""Outbox: at-least-once messages, leased to one relay at a time."""

from __future__ import annotations

from datetime import timedelta

from remediator.ports import Journal, OutboxMessage
from tests.contract.builders import NOW, message
from tests.contract.conftest import OpenReplica

CHANNEL = "kafka:remediator.outcomes"
LEASE = 30.0


def ids(pending: list[object]) -> list[str]:
    return [p.message.id for p in pending]  # type: ignore[attr-defined]


async def test_enqueued_messages_come_back_oldest_first_as_they_were(journal: Journal) -> None:
    messages = [message(n) for n in range(1, 4)] + [message(9, channel="slack")]
    await journal.enqueue(messages)
    await journal.enqueue([message(2)])  # an id already present is ignored
    pending = await journal.pending(channel=CHANNEL, limit=10, holder="a", at=NOW,
                                    lease_seconds=LEASE)  # fmt: skip
    assert [p.message for p in pending] == messages[:3]
    assert [p.attempts for p in pending] == [0, 0, 0]
    assert [p.seq for p in pending] == sorted(p.seq for p in pending)
    assert await journal.outbox_backlog() == {CHANNEL: 3, "slack": 1}


async def test_a_channel_is_relayed_in_order_by_one_relay_at_a_time(journal: Journal) -> None:
    await journal.enqueue([message(n) for n in range(1, 5)] + [message(9, channel="slack")])
    first = await journal.pending(channel=CHANNEL, limit=2, holder="a", at=NOW,
                                  lease_seconds=LEASE)  # fmt: skip
    assert ids(first) == ["msg-1", "msg-2"]
    # While a's lease holds, nothing after its messages goes to another relay...
    assert await journal.pending(channel=CHANNEL, limit=10, holder="b", at=NOW,
                                 lease_seconds=LEASE) == []  # fmt: skip
    # ...other channels are free...
    slack = await journal.pending(channel="slack", limit=10, holder="b", at=NOW,
                                  lease_seconds=LEASE)  # fmt: skip
    assert ids(slack) == ["msg-9"]
    # ...and a itself gets its own again, with the rest.
    again = await journal.pending(channel=CHANNEL, limit=10, holder="a", at=NOW,
                                  lease_seconds=LEASE)  # fmt: skip
    assert ids(again) == ["msg-1", "msg-2", "msg-3", "msg-4"]
    await journal.mark_published(ids=["msg-1", "msg-2"], at=NOW)
    assert await journal.pending(channel=CHANNEL, limit=10, holder="b", at=NOW,
                                 lease_seconds=LEASE) == []  # fmt: skip


async def test_a_lease_that_runs_out_is_offered_to_another_relay(journal: Journal) -> None:
    await journal.enqueue([message(n) for n in range(1, 5)])
    first = await journal.pending(channel=CHANNEL, limit=2, holder="a", at=NOW,
                                  lease_seconds=LEASE)  # fmt: skip
    just_before = NOW + timedelta(seconds=LEASE - 1)
    assert await journal.pending(channel=CHANNEL, limit=10, holder="b", at=just_before,
                                 lease_seconds=LEASE) == []  # fmt: skip
    # a published its two, then a relay leased the rest and stopped without a word.
    await journal.mark_published(ids=ids(first), at=just_before)
    rest = await journal.pending(channel=CHANNEL, limit=10, holder="b", at=just_before,
                                 lease_seconds=LEASE)  # fmt: skip
    assert ids(rest) == ["msg-3", "msg-4"]
    after = just_before + timedelta(seconds=LEASE)
    again = await journal.pending(channel=CHANNEL, limit=10, holder="c", at=after,
                                  lease_seconds=LEASE)  # fmt: skip
    assert ids(again) == ["msg-3", "msg-4"]
    assert await journal.outbox_backlog() == {CHANNEL: 2}


async def test_a_failed_attempt_is_counted_and_releases_the_lease(journal: Journal) -> None:
    await journal.enqueue([message(1)])
    leased = await journal.pending(channel=CHANNEL, limit=10, holder="a", at=NOW,
                                   lease_seconds=LEASE)  # fmt: skip
    await journal.mark_failed_attempt(ids=ids(leased), error="broker down " + "x" * 5000)
    retry = await journal.pending(channel=CHANNEL, limit=10, holder="b", at=NOW,
                                  lease_seconds=LEASE)  # fmt: skip
    assert ids(retry) == ["msg-1"]
    assert retry[0].attempts == 1


async def test_published_and_dead_messages_are_done(journal: Journal) -> None:
    await journal.enqueue([message(1), message(2), message(3)])
    await journal.mark_published(ids=["msg-1"], at=NOW)
    await journal.mark_dead(ids=["msg-2"], error="too large", at=NOW)
    pending = await journal.pending(channel=CHANNEL, limit=10, holder="a", at=NOW,
                                    lease_seconds=LEASE)  # fmt: skip
    assert ids(pending) == ["msg-3"]
    assert await journal.outbox_backlog() == {CHANNEL: 1}
    await journal.mark_published(ids=["msg-3"], at=NOW)
    assert await journal.outbox_backlog() == {}
    await journal.mark_published(ids=[], at=NOW)
    await journal.mark_failed_attempt(ids=[], error="nothing")
    await journal.enqueue([])


async def test_an_outbox_message_keeps_its_payload_and_key(journal: Journal) -> None:
    odd = OutboxMessage(
        id="odd", channel=CHANNEL, key=None,
        payload={"list": [1, 2.5, None, True], "nested": {"ü": "ß"}, "empty": {}},
        created_at=NOW,
    )  # fmt: skip
    await journal.enqueue([odd])
    (got,) = await journal.pending(channel=CHANNEL, limit=1, holder="a", at=NOW,
                                   lease_seconds=LEASE)  # fmt: skip
    assert got.message == odd


async def test_a_second_replica_takes_over_the_channel_when_the_first_is_done(
    replica: OpenReplica,
) -> None:
    a = await replica("replica-a")
    b = await replica("replica-b")
    await a.enqueue([message(n) for n in range(10)])
    from_a = await a.pending(channel=CHANNEL, limit=4, holder="replica-a", at=NOW,
                             lease_seconds=LEASE)  # fmt: skip
    assert await b.pending(channel=CHANNEL, limit=100, holder="replica-b", at=NOW,
                           lease_seconds=LEASE) == []  # fmt: skip
    await a.mark_published(ids=ids(from_a), at=NOW)
    from_b = await b.pending(channel=CHANNEL, limit=100, holder="replica-b", at=NOW,
                             lease_seconds=LEASE)  # fmt: skip
    assert ids(from_a) + ids(from_b) == [f"msg-{n}" for n in range(10)]


# -- exactly once on the channel: maybe_sent, renew_lease -------------------------------
def maybe_sent(pending: list[object]) -> dict[str, bool]:
    return {p.message.id: p.maybe_sent for p in pending}  # type: ignore[attr-defined]


async def test_a_message_no_relay_took_before_is_not_maybe_sent(journal: Journal) -> None:
    await journal.enqueue([message(1), message(2)])
    first = await journal.pending(channel=CHANNEL, limit=1, holder="a", at=NOW,
                                  lease_seconds=LEASE)  # fmt: skip
    assert maybe_sent(first) == {"msg-1": False}
    await journal.mark_published(ids=ids(first), at=NOW)
    second = await journal.pending(channel=CHANNEL, limit=10, holder="a", at=NOW,
                                   lease_seconds=LEASE)  # fmt: skip
    assert maybe_sent(second) == {"msg-2": False}


async def test_a_lease_never_marked_makes_the_message_maybe_sent_for_whoever_takes_it(
    journal: Journal,
) -> None:
    await journal.enqueue([message(n) for n in range(1, 4)])
    await journal.pending(channel=CHANNEL, limit=2, holder="a", at=NOW,
                          lease_seconds=LEASE)  # fmt: skip
    # a leased msg-1 and msg-2 and died; msg-3 was never leased.
    after = NOW + timedelta(seconds=LEASE + 1)
    taken = await journal.pending(channel=CHANNEL, limit=10, holder="b", at=after,
                                  lease_seconds=LEASE)  # fmt: skip
    assert maybe_sent(taken) == {"msg-1": True, "msg-2": True, "msg-3": False}
    # b died too: everything it leased is in doubt now, for b itself as well.
    again = await journal.pending(channel=CHANNEL, limit=10, holder="b", at=after,
                                  lease_seconds=LEASE)  # fmt: skip
    assert maybe_sent(again) == {"msg-1": True, "msg-2": True, "msg-3": True}


async def test_a_failed_attempt_makes_the_message_maybe_sent(journal: Journal) -> None:
    await journal.enqueue([message(1)])
    leased = await journal.pending(channel=CHANNEL, limit=10, holder="a", at=NOW,
                                   lease_seconds=LEASE)  # fmt: skip
    # A batch that failed may have reached the channel in part.
    await journal.mark_failed_attempt(ids=ids(leased), error="timed out", holder="a")
    retry = await journal.pending(channel=CHANNEL, limit=10, holder="a", at=NOW,
                                  lease_seconds=LEASE)  # fmt: skip
    assert maybe_sent(retry) == {"msg-1": True}


async def test_renewing_a_held_lease_extends_it(journal: Journal) -> None:
    await journal.enqueue([message(1), message(2)])
    leased = await journal.pending(channel=CHANNEL, limit=10, holder="a", at=NOW,
                                   lease_seconds=LEASE)  # fmt: skip
    later = NOW + timedelta(seconds=LEASE - 1)
    assert await journal.renew_lease(channel=CHANNEL, ids=ids(leased), holder="a", at=later,
                                     lease_seconds=LEASE)  # fmt: skip
    # The first lease would have run out here; the renewed one has not.
    past_first = NOW + timedelta(seconds=LEASE + 1)
    assert await journal.pending(channel=CHANNEL, limit=10, holder="b", at=past_first,
                                 lease_seconds=LEASE) == []  # fmt: skip
    past_renewed = later + timedelta(seconds=LEASE + 1)
    taken = await journal.pending(channel=CHANNEL, limit=10, holder="b", at=past_renewed,
                                  lease_seconds=LEASE)  # fmt: skip
    assert ids(taken) == ["msg-1", "msg-2"]
    assert await journal.renew_lease(channel=CHANNEL, ids=[], holder="a", at=NOW,
                                     lease_seconds=LEASE)  # fmt: skip


async def test_a_lease_run_out_but_taken_by_nobody_can_still_be_renewed(
    journal: Journal,
) -> None:
    await journal.enqueue([message(1)])
    leased = await journal.pending(channel=CHANNEL, limit=10, holder="a", at=NOW,
                                   lease_seconds=LEASE)  # fmt: skip
    resumed = NOW + timedelta(seconds=LEASE * 3)
    assert await journal.renew_lease(channel=CHANNEL, ids=ids(leased), holder="a", at=resumed,
                                     lease_seconds=LEASE)  # fmt: skip
    assert await journal.pending(channel=CHANNEL, limit=10, holder="b", at=resumed,
                                 lease_seconds=LEASE) == []  # fmt: skip


async def test_a_lease_another_relay_took_over_is_not_renewed(journal: Journal) -> None:
    await journal.enqueue([message(1), message(2)])
    leased = await journal.pending(channel=CHANNEL, limit=10, holder="a", at=NOW,
                                   lease_seconds=LEASE)  # fmt: skip
    after = NOW + timedelta(seconds=LEASE + 1)
    await journal.pending(channel=CHANNEL, limit=1, holder="b", at=after,
                          lease_seconds=LEASE)  # fmt: skip
    # b holds msg-1 only; a still "holds" msg-2: a must not publish either.
    assert not await journal.renew_lease(channel=CHANNEL, ids=ids(leased), holder="a",
                                         at=after, lease_seconds=LEASE * 10)  # fmt: skip
    # Nothing changed: b's lease on msg-1 still holds the channel, msg-2 waits behind it.
    assert await journal.pending(channel=CHANNEL, limit=10, holder="c", at=after,
                                 lease_seconds=LEASE) == []  # fmt: skip
    free = after + timedelta(seconds=LEASE + 1)
    assert ids(await journal.pending(channel=CHANNEL, limit=10, holder="c", at=free,
                                     lease_seconds=LEASE)) == ["msg-1", "msg-2"]  # fmt: skip


async def test_a_lease_on_messages_published_meanwhile_is_not_renewed(journal: Journal) -> None:
    await journal.enqueue([message(1), message(2)])
    leased = await journal.pending(channel=CHANNEL, limit=10, holder="a", at=NOW,
                                   lease_seconds=LEASE)  # fmt: skip
    after = NOW + timedelta(seconds=LEASE + 1)
    taken = await journal.pending(channel=CHANNEL, limit=10, holder="b", at=after,
                                  lease_seconds=LEASE)  # fmt: skip
    await journal.mark_published(ids=ids(taken), at=after)
    assert not await journal.renew_lease(channel=CHANNEL, ids=ids(leased), holder="a",
                                         at=after, lease_seconds=LEASE)  # fmt: skip
    assert not await journal.renew_lease(channel=CHANNEL, ids=["msg-1"], holder="b",
                                         at=after, lease_seconds=LEASE)  # fmt: skip
    assert await journal.outbox_backlog() == {}


async def test_a_failed_attempt_by_a_relay_that_lost_its_lease_keeps_the_new_holders(
    journal: Journal,
) -> None:
    await journal.enqueue([message(1)])
    leased = await journal.pending(channel=CHANNEL, limit=10, holder="a", at=NOW,
                                   lease_seconds=LEASE)  # fmt: skip
    after = NOW + timedelta(seconds=LEASE + 1)
    assert ids(await journal.pending(channel=CHANNEL, limit=10, holder="b", at=after,
                                     lease_seconds=LEASE)) == ["msg-1"]  # fmt: skip
    # a resumes, its publish fails: the attempt counts, b's lease stays.
    await journal.mark_failed_attempt(ids=ids(leased), error="timed out", holder="a")
    assert await journal.pending(channel=CHANNEL, limit=10, holder="c", at=after,
                                 lease_seconds=LEASE) == []  # fmt: skip
    assert await journal.renew_lease(channel=CHANNEL, ids=ids(leased), holder="b", at=after,
                                     lease_seconds=LEASE)  # fmt: skip
    # b's own failure releases it.
    await journal.mark_failed_attempt(ids=ids(leased), error="timed out", holder="b")
    retry = await journal.pending(channel=CHANNEL, limit=10, holder="c", at=after,
                                  lease_seconds=LEASE)  # fmt: skip
    assert [(p.message.id, p.attempts) for p in retry] == [("msg-1", 2)]
