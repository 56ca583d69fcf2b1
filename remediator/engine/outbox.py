"""Drains the journal's outbox into an ``EventPublisher``: each message once, in order.

The engine writes outcome messages in the same transaction as the decision that
caused them, so a crash between an action and its event cannot lose the event: the
message waits in the outbox and a relay publishes it after the restart. A message is
marked published only after the publisher returned (every record acknowledged).

One relay per channel and replica; the journal leases each batch to one relay at a
time (``lease_seconds``), oldest first, so a channel's order is kept. Failures back
off exponentially (capped) and never drop a message. One pass (``run_once``):

1. Lease a batch. The journal flags the messages a relay took before and never
   marked published (``maybe_sent``): that relay was killed or stopped after
   publishing and before marking, lost the journal at the mark, or its publish
   failed after some records got through. This replica's own earlier lease counts
   too (a restarted replica gets its own leases back at once).
2. Ask the channel which of the flagged messages it already holds
   (``EventPublisher.already_published``; Kafka reads the topic back by the
   CloudEvents id). Those are marked published without being sent again. If the
   channel cannot be read back, nothing is published and the pass is retried.
3. Renew the lease by compare-and-set (``Outbox.renew_lease``) right before
   publishing: a relay that was stopped (SIGSTOP, a long pause) until its lease ran
   out and another relay took the batch over finds it no longer leased to it and
   publishes nothing. The renewal gives the publish a whole lease, which is twice
   the Kafka publisher's own timeout.
4. Publish the rest in order, then mark them published. A failure counts an attempt
   and releases the lease, only if it is still this relay's.

What remains at least once, and why: after the renewal (3) the records are handed to
the producer and leave in milliseconds, but nothing fences a process frozen in
between. A relay stopped after its renewal and before its records reached the broker,
for longer than the lease (60 s), while another relay published the batch, sends it
again when it resumes; so does a publish that reaches the broker only after its lease
ran out (the producer's timeouts are far shorter). Only Kafka transactions could fence
that producer (one transactional id shared by the replicas), and only for consumers
that read committed records; every relay hand-over would fence the previous one, so
they are not used. ``already_published`` looks back from shortly before the messages
were created, at most ``read_back_limit`` records (connectors/kafka.py); a message
published further back is not found and goes out again. Each repeat carries the same
CloudEvents ``id``, so consumers can still drop it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Protocol

from remediator.domain.errors import TemporaryError
from remediator.ports import EventPublisher, Outbox, OutboxMessage, PendingMessage

log = logging.getLogger(__name__)

# Twice the Kafka publisher's timeout (30 s), so a publish ends well within the lease
# its renewal gives it; a replica that dies holding a lease delays its channel this long
# (unless it comes back first: its own leases are offered to it again at once).
LEASE_SECONDS = 60.0


class RelayObserver(Protocol):
    """Metrics hooks (``connectors.kafka.KafkaOutboxMetrics`` implements them)."""

    def backlog(self, counts: Mapping[str, int]) -> None: ...

    def published(self, *, channel: str, count: int) -> None: ...

    def failed(self, *, channel: str) -> None: ...

    def found_published(self, *, channel: str, count: int) -> None:
        """Messages found already on the channel and marked without sending again."""
        ...

    def lease_lost(self, *, channel: str) -> None:
        """A batch not published because another relay took it over meanwhile."""
        ...


class OutboxRelay:
    def __init__(
        self,
        *,
        journal: Outbox,
        publisher: EventPublisher,
        holder: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        batch_size: int = 100,
        poll_seconds: float = 1.0,
        max_backoff_seconds: float = 60.0,
        observer: RelayObserver | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        """``holder`` names this instance in the outbox's leases."""
        self._journal = journal
        self._holder = holder
        self._lease_seconds = lease_seconds
        self._publisher = publisher
        self._clock = clock
        self._batch_size = batch_size
        self._poll = poll_seconds
        self._max_backoff = max_backoff_seconds
        self._observer = observer
        self._sleep = sleep
        self._wake = asyncio.Event()
        self.channel = publisher.channel

    def wake(self) -> None:
        """Something was enqueued (optional: the relay also polls every poll_seconds)."""
        self._wake.set()

    async def run(self) -> None:
        """Root task: publish until cancelled; outages of journal or peer back off."""
        backoff = 0.0
        while True:
            self._wake.clear()
            try:
                published = await self.run_once()
            except TemporaryError as exc:
                backoff = min(max(exc.delay, backoff * 2), self._max_backoff)
                log.warning("outbox %s: %s; retrying in %.1fs", self.channel, exc, backoff)
                await self._sleep(backoff)
                continue
            backoff = 0.0
            if published < self._batch_size:  # drained: wait for news or the next poll
                with contextlib.suppress(TimeoutError):  # not wait_for: see Executor.run
                    async with asyncio.timeout(self._poll):
                        await self._wake.wait()

    async def run_once(self) -> int:
        """Relay one batch; return how many messages are done (published now or found
        already published). TemporaryError: the rest of the batch is not marked."""
        await self._observe_backlog()
        pending = await self._journal.pending(
            channel=self.channel,
            limit=self._batch_size,
            holder=self._holder,
            at=self._clock(),
            lease_seconds=self._lease_seconds,
        )
        if not pending:
            return 0
        found = await self._settle_maybe_sent(pending)
        rest = [p.message for p in pending if p.message.id not in found]
        if rest and await self._still_leased(rest):
            await self._publish(rest)
            return len(found) + len(rest)
        return len(found)

    async def _settle_maybe_sent(self, batch: Sequence[PendingMessage]) -> set[str]:
        """Of the batch's maybe-sent messages, mark those the channel already holds
        published; return their ids."""
        maybe_sent = [p.message for p in batch if p.maybe_sent]
        if not maybe_sent:
            return set()
        try:
            found = await self._publisher.already_published(maybe_sent)
        except TemporaryError as exc:  # unknown: publishing them now could repeat them
            await self._record_failure([p.message.id for p in batch], exc)
            raise
        found &= {m.id for m in maybe_sent}
        if found:
            await self._journal.mark_published(ids=sorted(found), at=self._clock())
            if self._observer is not None:
                self._observer.found_published(channel=self.channel, count=len(found))
        log.info(
            "outbox %s: %d message(s) taken before by a relay that did not mark them;"
            " %d already on the channel, marked published without sending them again",
            self.channel, len(maybe_sent), len(found),
        )  # fmt: skip
        return found

    async def _still_leased(self, messages: Sequence[OutboxMessage]) -> bool:
        """Renew this relay's lease by compare-and-set; False: another relay has them."""
        renewed = await self._journal.renew_lease(
            channel=self.channel,
            ids=[m.id for m in messages],
            holder=self._holder,
            at=self._clock(),
            lease_seconds=self._lease_seconds,
        )
        if not renewed:
            log.warning(
                "outbox %s: the lease on %d message(s) ran out before they were published"
                " (this replica was stopped or slow) and another relay took them over;"
                " not publishing them",
                self.channel, len(messages),
            )  # fmt: skip
            if self._observer is not None:
                self._observer.lease_lost(channel=self.channel)
        return renewed

    async def _publish(self, messages: Sequence[OutboxMessage]) -> None:
        ids = [m.id for m in messages]
        try:
            await self._publisher.publish(messages)
        except TemporaryError as exc:
            await self._record_failure(ids, exc)
            raise
        # If this write fails, the messages stay leased: the next relay to lease them
        # finds them on the channel (maybe_sent) instead of publishing them again.
        await self._journal.mark_published(ids=ids, at=self._clock())
        if self._observer is not None:
            self._observer.published(channel=self.channel, count=len(ids))
        log.debug("outbox %s: published %d message(s)", self.channel, len(ids))

    async def _record_failure(self, ids: Sequence[str], exc: TemporaryError) -> None:
        if self._observer is not None:
            self._observer.failed(channel=self.channel)
        try:
            await self._journal.mark_failed_attempt(ids=ids, error=str(exc), holder=self._holder)
        except TemporaryError as journal_exc:  # bookkeeping only: the retry matters
            log.warning("outbox %s: could not record the failure: %s", self.channel,
                        journal_exc)  # fmt: skip

    async def _observe_backlog(self) -> None:
        if self._observer is not None:
            self._observer.backlog(await self._journal.outbox_backlog())
