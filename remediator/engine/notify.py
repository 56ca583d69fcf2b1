"""Delivers notices (Slack, email) from the journal's outbox, at least once.

A notice is written to the outbox with the decision or state change it reports
(id ``<channel>:<remediation>:<stage>``, so one stage is queued once). This relay
sends them in order per channel; a notifier that is down delays notices, never a
remediation. Slack keeps one message per remediation: the first notice posts it and
stores its reference at once, later stages update it in place.

With several replicas each relay leases the notices it is about to send (for
``lease_seconds``), so another replica's relay does not send them too. Delivery is
at least once: a replica stopped between sending and marking leaves its lease to
expire, and another replica sends again (Slack updates the same message; an email's
Message-ID lets mail clients drop the repeat).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from remediator.domain.errors import PermanentError, TemporaryError
from remediator.domain.notices import (
    EmailRouting,
    SlackRouting,
    email_html,
    email_message_id,
    email_subject,
    email_text,
    escalation_blocks,
    escalation_lines,
    escalation_subject,
    escalation_text,
    route_email_recipients,
    route_slack_channel,
    slack_blocks,
    slack_text,
)
from remediator.domain.record import RollbackRecord, Stage, dedup_key
from remediator.domain.record_build import record_from_journal
from remediator.messages import notice_messages as notice_messages  # re-exported
from remediator.ports import (
    EmailPort,
    Outbox,
    PendingMessage,
    RemediationStore,
    SignalStore,
    SlackPort,
    SlackThreads,
)

log = logging.getLogger(__name__)

SLACK = "slack"
EMAIL = "email"
POLL_SECONDS = 5.0
# Longer than a batch of notices takes to send (each Slack or SMTP call has its own
# timeout); a replica that dies holding a lease delays those notices this long.
LEASE_SECONDS = 300.0


class Delivery(StrEnum):
    """What became of one attempt to deliver a notice (a metric label)."""

    SENT = "sent"
    RETRIED = "retried"  # the channel failed for now: the notice is sent again later
    GIVEN_UP = "given_up"  # refused for good, or a bug: kept dead with its error
    NO_RECIPIENTS = "no_recipients"  # no email route for the service and severity


DeliveryObserver = Callable[[str, Delivery], None]


class NoticeJournal(Outbox, RemediationStore, SignalStore, SlackThreads, Protocol):
    """The journal roles the relay uses: the outbox, the remediation and signal a
    notice is about, and where each remediation's Slack message is."""


class NotificationRelay:
    def __init__(
        self,
        *,
        journal: NoticeJournal,
        holder: str,
        slack: SlackPort | None = None,
        slack_routes: SlackRouting | None = None,
        email: EmailPort | None = None,
        email_routes: EmailRouting | None = None,
        email_domain: str = "remediator.local",
        record_url: Callable[[str], str | None] = lambda rid: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_backoff: float = 60.0,
        lease_seconds: float = LEASE_SECONDS,
        on_internal_error: Callable[[str], None] | None = None,
        escalation_channel: str | None = None,
        approval_buttons: bool = False,
        on_delivery: DeliveryObserver | None = None,
    ) -> None:
        """``holder`` names this instance in the outbox's leases; ``escalation_channel``
        is the Slack channel escalations go to (default: the remediation's own);
        ``approval_buttons`` puts Approve and Reject on a waiting plan's message (only
        when Slack can post the clicks back: slack.signing_secret is set);
        ``on_delivery(channel, result)`` hears of every attempt (for metrics)."""
        self._on_delivery = on_delivery
        self._approval_buttons = approval_buttons
        self._journal = journal
        self._holder = holder
        self._lease_seconds = lease_seconds
        self._on_internal_error = on_internal_error
        self._escalation_channel = escalation_channel
        self._slack = slack
        self._slack_routes = slack_routes
        self._email = email
        self._email_routes = email_routes
        self._email_domain = email_domain
        self._record_url = record_url
        self._clock = clock
        self._max_backoff = max_backoff
        self._wake = asyncio.Event()

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(
            name
            for name, sender in ((SLACK, self._slack), (EMAIL, self._email))
            if sender is not None
        )

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Root task: deliver until cancelled; each channel backs off on its own."""
        await asyncio.gather(*(self._run_channel(channel) for channel in self.channels))

    async def _run_channel(self, channel: str) -> None:
        delay = 1.0
        while True:
            try:
                sent = await self.deliver_pending(channel)
            except TemporaryError as exc:
                log.warning("%s notices delayed (retry in %.0fs): %s", channel, delay, exc)
                await asyncio.sleep(max(delay, exc.delay))
                delay = min(delay * 2, self._max_backoff)
                continue
            delay = 1.0
            if sent == 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):  # not wait_for: see Executor.run
                    async with asyncio.timeout(POLL_SECONDS):
                        await self._wake.wait()

    async def deliver_pending(self, channel: str, *, limit: int = 50) -> int:
        """Deliver queued notices of a channel in order; raise TemporaryError to back off."""
        pending = await self._journal.pending(
            channel=channel,
            limit=limit,
            holder=self._holder,
            at=self._clock(),
            lease_seconds=self._lease_seconds,
        )
        for item in pending:
            try:
                result = await self._deliver(channel, item)
            except TemporaryError as exc:
                self._delivered(channel, Delivery.RETRIED)
                await self._journal.mark_failed_attempt(ids=[item.message.id], error=str(exc))
                raise
            except PermanentError as exc:
                # Retrying cannot help (bad channel, bad token, bad address); keep it with
                # the error rather than block every later notice behind it.
                log.error("%s notice %s given up: %s", channel, item.message.id, exc)
                self._delivered(channel, Delivery.GIVEN_UP)
                await self._journal.mark_dead(
                    ids=[item.message.id], error=str(exc), at=self._clock()
                )
                continue
            except Exception as exc:  # a bug must not stop every later notice
                # Retrying a bug fails the same way and would block the channel: keep the
                # notice, dead, with the error, and count it.
                error = f"internal error: {type(exc).__name__}: {exc}"[:500]
                log.error("%s notice %s given up: %s", channel, item.message.id, error,
                          exc_info=exc)  # fmt: skip
                if self._on_internal_error is not None:
                    self._on_internal_error(type(exc).__name__)
                self._delivered(channel, Delivery.GIVEN_UP)
                await self._journal.mark_dead(ids=[item.message.id], error=error, at=self._clock())
                continue
            self._delivered(channel, result)
            await self._journal.mark_published(ids=[item.message.id], at=self._clock())
        return len(pending)

    def _delivered(self, channel: str, result: Delivery) -> None:
        if self._on_delivery is not None:
            self._on_delivery(channel, result)

    async def _deliver(self, channel: str, item: PendingMessage) -> Delivery:
        rid = str(item.message.payload["remediation_id"])
        record = await self._record(rid)
        if record is None:
            raise PermanentError(f"remediation {rid} is not in the journal")
        url = self._record_url(rid)
        stage = Stage(item.message.payload["stage"])
        if stage is Stage.ESCALATED:
            waiting_for = list(item.message.payload.get("waiting_for") or ())
            return await self._escalate(channel, record, waiting_for, url)
        if channel == SLACK:
            await self._to_slack(rid, record, url)
            return Delivery.SENT
        if channel == EMAIL:
            return await self._to_email(rid, stage, record, url)
        raise PermanentError(f"unknown notice channel {channel!r}")

    async def _record(self, rid: str) -> RollbackRecord | None:
        item = await self._journal.get_remediation(rid)
        if item is None:
            return None
        signal = await self._journal.get_signal(item.signal_id)
        return record_from_journal(item, signal)

    async def _to_slack(self, rid: str, record: RollbackRecord, url: str | None) -> None:
        assert self._slack is not None and self._slack_routes is not None
        blocks: list[dict[str, Any]] = slack_blocks(
            record, record_url=url, buttons=self._approval_buttons
        )
        text = slack_text(record)
        ref = await self._journal.slack_ref(rid)
        if ref is not None:
            try:
                await self._slack.update(ref=ref, blocks=blocks, text=text)
                return
            except PermanentError as exc:
                if getattr(exc, "code", None) != "message_not_found":
                    raise
                log.warning("Slack message of %s was deleted; posting a new one", rid)
        channel = route_slack_channel(
            service=record.service, severity=record.trigger.severity, routes=self._slack_routes
        )
        ref = await self._slack.post(channel=channel, blocks=blocks, text=text)
        # Stored before anything else can fail, so a redelivery updates, not reposts.
        await self._journal.save_slack_ref(rid, ref)

    async def _escalate(
        self, channel: str, record: RollbackRecord, waiting_for: list[Any], url: str | None
    ) -> Delivery:
        """A second message of its own (not an update of the remediation's message), to
        the escalation channel, naming who has not answered."""
        if channel == SLACK:
            assert self._slack is not None and self._slack_routes is not None
            where = self._escalation_channel or route_slack_channel(
                service=record.service, severity=record.trigger.severity,
                routes=self._slack_routes,
            )  # fmt: skip
            await self._slack.post(
                channel=where,
                blocks=escalation_blocks(
                    record, waiting_for, record_url=url, buttons=self._approval_buttons
                ),
                text=escalation_text(record, waiting_for),
            )
            return Delivery.SENT
        if channel != EMAIL:
            raise PermanentError(f"unknown notice channel {channel!r}")
        assert self._email is not None and self._email_routes is not None
        recipients = route_email_recipients(
            service=record.service, severity=record.trigger.severity, routes=self._email_routes
        )
        if not recipients:
            return Delivery.NO_RECIPIENTS
        text = "\n".join(escalation_lines(record, waiting_for)) + "\n"
        if url:
            text += f"\nRollback record: {url}\n"
        await self._email.send(
            to=recipients, subject=escalation_subject(record), text=text,
            html=email_html(record, record_url=url),
            message_id=email_message_id(
                dedup_key=dedup_key(remediation_id=record.remediation_id, stage=Stage.ESCALATED),
                domain=self._email_domain,
            ),
        )  # fmt: skip
        return Delivery.SENT

    async def _to_email(
        self, rid: str, stage: Stage, record: RollbackRecord, url: str | None
    ) -> Delivery:
        assert self._email is not None and self._email_routes is not None
        recipients = route_email_recipients(
            service=record.service, severity=record.trigger.severity, routes=self._email_routes
        )
        if not recipients:
            log.info("no email route for %s (severity %s)", record.service, record.trigger.severity)
            return Delivery.NO_RECIPIENTS
        await self._email.send(
            to=recipients,
            subject=email_subject(record),
            text=email_text(record, record_url=url),
            html=email_html(record, record_url=url),
            message_id=email_message_id(
                dedup_key=dedup_key(remediation_id=rid, stage=stage), domain=self._email_domain
            ),
        )
        return Delivery.SENT
