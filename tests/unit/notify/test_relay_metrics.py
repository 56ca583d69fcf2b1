"""Every delivery attempt of a notice is counted in
remediator_notifications_total{channel,result}: sent, retried, given_up, no_recipients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from remediator.domain.errors import PermanentError, TemporaryError
from remediator.domain.notices import EmailRouting, SlackMessageRef, SlackRouting
from remediator.engine.decider import DecisionEngine
from remediator.engine.notify import EMAIL, SLACK, NotificationRelay
from remediator.ingress.alertmanager import parse_payload, to_signals
from remediator.journal.sqlite import SqliteJournal
from remediator.metrics import Metrics
from remediator.rulefiles import load_rule_pack_from_path
from tests.unit.journal_helpers import outbox_messages
from tests.unit.payloads import alert, payload

RULES = Path(__file__).resolve().parents[3] / "rules"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


class Facts:
    async def replicas(self, *, service: str, namespace: str) -> tuple[int, int | None] | None:
        return (3, None)


class ScriptedSlack:
    """A SlackPort whose posts raise the scripted errors in turn, then succeed."""

    def __init__(self, errors: Sequence[Exception]) -> None:
        self.errors = list(errors)
        self.posted = 0

    async def post(
        self, *, channel: str, blocks: list[dict[str, Any]], text: str
    ) -> SlackMessageRef:
        if self.errors:
            raise self.errors.pop(0)
        self.posted += 1
        return SlackMessageRef(channel="C1", ts=f"1.{self.posted}")

    async def update(
        self, *, ref: SlackMessageRef, blocks: list[dict[str, Any]], text: str
    ) -> None:
        return None


class Mail:
    def __init__(self) -> None:
        self.sent = 0

    async def send(
        self, *, to: Sequence[str], subject: str, text: str, html: str,
        message_id: str | None = None,
    ) -> None:  # fmt: skip
        self.sent += 1


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[SqliteJournal]:
    j = SqliteJournal(path=tmp_path / "journal.db")
    await j.open()
    yield j
    await j.close()


async def decide_two_alerts(journal: SqliteJournal, channels: tuple[str, ...]) -> None:
    alerts = [
        alert(name="CPUSaturation", service=s, namespace=ns, fingerprint=s)
        for s, ns in (("checkout", "shop"), ("payments", "payments"))
    ]
    signals = to_signals(
        parse_payload(orjson.dumps(payload(alerts))),
        received_at=NOW, service_labels=("service",), namespace_labels=("namespace",),
    )  # fmt: skip
    await journal.record_signals(signals)
    engine = DecisionEngine(journal=journal, pack=load_rule_pack_from_path(RULES), facts=Facts(),
                            dry_run=False, notice_channels=channels, clock=lambda: NOW)  # fmt: skip
    assert await engine.run_once() == 2


def relay_counting(journal: SqliteJournal, metrics: Metrics, **ports: Any) -> NotificationRelay:
    """Wired to the registry as the runtime wires it."""
    return NotificationRelay(
        journal=journal,
        holder="test-1",
        clock=lambda: NOW,
        on_delivery=lambda channel, result: metrics.notifications.labels(
            channel=channel, result=result.value
        ).inc(),
        **ports,
    )


def count(metrics: Metrics, channel: str, result: str) -> float:
    value = metrics.registry.get_sample_value(
        "remediator_notifications_total", {"channel": channel, "result": result}
    )
    return value or 0.0


async def test_slack_failures_count_retried_then_given_up_then_sent(
    journal: SqliteJournal,
) -> None:
    await decide_two_alerts(journal, (SLACK,))
    metrics = Metrics()
    slack = ScriptedSlack([TemporaryError("rate limited"), PermanentError("channel_not_found")])
    relay = relay_counting(journal, metrics, slack=slack,
                           slack_routes=SlackRouting(default="#alerts"))  # fmt: skip

    with pytest.raises(TemporaryError):
        await relay.deliver_pending(SLACK)
    assert count(metrics, SLACK, "retried") == 1
    assert count(metrics, SLACK, "sent") == 0

    # The retried notice is refused for good (given up); the other one is sent.
    assert await relay.deliver_pending(SLACK) == 2
    assert count(metrics, SLACK, "given_up") == 1
    assert count(metrics, SLACK, "sent") == 1
    assert slack.posted == 1
    assert await outbox_messages(journal, SLACK, limit=10) == []


async def test_email_sent_and_without_recipients_are_told_apart(journal: SqliteJournal) -> None:
    await decide_two_alerts(journal, (EMAIL,))
    metrics = Metrics()
    mail = Mail()
    # Only checkout's notices have a route; payments has none and no default.
    routes = EmailRouting(by_service={"checkout": ("shop@example.test",)})
    relay = relay_counting(journal, metrics, email=mail, email_routes=routes)

    assert await relay.deliver_pending(EMAIL) == 2
    assert mail.sent == 1
    assert count(metrics, EMAIL, "sent") == 1
    assert count(metrics, EMAIL, "no_recipients") == 1
    assert count(metrics, EMAIL, "retried") == 0
