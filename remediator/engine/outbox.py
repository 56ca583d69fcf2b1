"""Drains the journal's outbox into an ``EventPublisher``: at least once, in order.

The engine writes outcome messages in the same transaction as the decision that
caused them, so a crash between an action and its event cannot lose the event: the
message waits in the outbox and this relay publishes it after the restart. A message
is marked published only after the publisher returned (every record acknowledged);
a crash between the ack and the mark publishes it again, with the same CloudEvents
``id``, which is how consumers recognise the repeat.

One relay per channel; it publishes oldest first and stops at the first failure, so a
channel's order is kept. Failures back off exponentially (capped) and never drop a
message.

With several replicas, each relay leases the batch it is about to publish (for
``lease_seconds``): no other replica publishes those messages meanwhile, nor any
later one of the channel. A replica stopped between publishing and marking leaves
its lease to expire; another replica then publishes the batch again, with the same
ids. Delivery is at least once, and consumers drop repeats by id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Protocol

from remediator.domain.errors import TemporaryError
from remediator.ports import EventPublisher, Outbox

log = logging.getLogger(__name__)

# Far longer than publishing one batch takes (the producer's own timeouts are shorter);
# a replica that dies holding a lease delays its channel this long.
LEASE_SECONDS = 60.0


class RelayObserver(Protocol):
    """Metrics hooks (``connectors.kafka.KafkaOutboxMetrics`` implements them)."""

    def backlog(self, counts: Mapping[str, int]) -> None: ...

    def published(self, *, channel: str, count: int) -> None: ...

    def failed(self, *, channel: str) -> None: ...


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
        """Publish one batch; return how many. TemporaryError: nothing marked published."""
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
        messages = [p.message for p in pending]
        ids = [m.id for m in messages]
        try:
            await self._publisher.publish(messages)
        except TemporaryError as exc:
            if self._observer is not None:
                self._observer.failed(channel=self.channel)
            try:
                await self._journal.mark_failed_attempt(ids=ids, error=str(exc))
            except TemporaryError as journal_exc:  # bookkeeping only: the retry matters
                log.warning("outbox %s: could not record the failure: %s", self.channel,
                            journal_exc)  # fmt: skip
            raise
        # If this write fails the batch is published again later (same ids): at least
        # once, never lost.
        await self._journal.mark_published(ids=ids, at=self._clock())
        if self._observer is not None:
            self._observer.published(channel=self.channel, count=len(ids))
        log.debug("outbox %s: published %d message(s)", self.channel, len(ids))
        return len(ids)

    async def _observe_backlog(self) -> None:
        if self._observer is not None:
            self._observer.backlog(await self._journal.outbox_backlog())
