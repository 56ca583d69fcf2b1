"""Decisions -> outbox -> Slack and email, with the real SMTP peer and the Slack stand-in."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from remediator.connectors.email import EmailNotifier
from remediator.connectors.slack import SlackNotifier
from remediator.domain.approvals import ApprovalConfig, ApprovalRequest, policy_for
from remediator.domain.errors import TemporaryError
from remediator.domain.lifecycle import RemediationStatus
from remediator.domain.notices import EmailRouting, SlackRouting
from remediator.domain.record import Stage
from remediator.engine.approvals import ApprovalTimer
from remediator.engine.decider import DecisionEngine
from remediator.engine.notify import EMAIL, SLACK, NotificationRelay, notice_messages
from remediator.ingress.alertmanager import parse_payload, to_signals
from remediator.journal.sqlite import SqliteJournal
from remediator.rulefiles import load_rule_pack_from_path
from tests.contract.builders import NOW as CONTRACT_NOW
from tests.contract.builders import Clock, plant
from tests.unit.journal_helpers import outbox_messages
from tests.unit.payloads import alert, payload

pytestmark = pytest.mark.integration
RULES = Path(__file__).resolve().parents[3] / "rules"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


class Facts:
    async def replicas(self, *, service: str, namespace: str) -> tuple[int, int | None] | None:
        return (3, None)


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[SqliteJournal]:
    j = SqliteJournal(path=tmp_path / "journal.db")
    await j.open()
    yield j
    await j.close()


@pytest.fixture
async def relay(
    journal: SqliteJournal, slack_api: Any, smtp_server: Any
) -> AsyncIterator[NotificationRelay]:
    slack_api.reset()
    smtp_server.clear()
    slack = SlackNotifier(
        token=slack_api.endpoints["slack_token"],
        base_url=slack_api.endpoints["slack_api_url"],
        backoff_factor=0.05,
        max_retries=0,
    )
    host, port = smtp_server.endpoints["smtp"].rsplit(":", 1)
    email = EmailNotifier(
        host=host, port=int(port), security="none", sender="remediator@example.test",
        username=smtp_server.endpoints["smtp_user"],
        password=SecretStr(smtp_server.endpoints["smtp_password"]), timeout=5.0,
    )  # fmt: skip
    yield NotificationRelay(
        journal=journal,
        holder="replica-1",
        slack=slack,
        slack_routes=SlackRouting(default="#alerts"),
        email=email,
        email_routes=EmailRouting(default=("oncall@example.test",)),
        record_url=lambda rid: f"https://remediator.example.test/r/{rid}",
        escalation_channel="#remediator",
    )
    await slack.close()
    slack_api.reset()


async def plan_one_remediation(journal: SqliteJournal) -> str:
    signals = to_signals(
        parse_payload(orjson.dumps(payload([alert(name="CPUSaturation", fingerprint="c1")]))),
        received_at=NOW, service_labels=("service",), namespace_labels=("namespace",),
    )  # fmt: skip
    await journal.record_signals(signals)
    engine = DecisionEngine(journal=journal, pack=load_rule_pack_from_path(RULES), facts=Facts(),
                            dry_run=False, notice_channels=(SLACK, EMAIL))  # fmt: skip
    assert await engine.run_once() == 1
    [item] = (await journal.list_remediations()).items
    assert item.status is RemediationStatus.PLANNED
    return item.id


async def test_plan_is_announced_once_then_updated_in_place(
    journal: SqliteJournal, relay: NotificationRelay, slack_api: Any, smtp_server: Any
) -> None:
    rid = await plan_one_remediation(journal)
    assert await relay.deliver_pending(SLACK) == 1
    assert await relay.deliver_pending(EMAIL) == 1
    # Delivered notices are not sent again.
    assert await relay.deliver_pending(SLACK) == 0
    assert await relay.deliver_pending(EMAIL) == 0

    [post] = slack_api.calls_to("chat.postMessage")
    blocks = post.args["blocks"]
    blocks = json.loads(blocks) if isinstance(blocks, str) else blocks
    text = json.dumps(blocks)
    assert "checkout" in text and "CPUSaturation" in text and "scale_up" in text
    assert f"https://remediator.example.test/r/{rid}" in text

    [mail] = smtp_server.messages
    assert "checkout" in mail["Subject"]
    assert mail["To"] == "oncall@example.test"

    # A later stage (the executor will queue these) updates the same Slack message.
    await journal.enqueue(
        notice_messages(remediation_id=rid, stage=Stage.SUCCEEDED, channels=(SLACK,), at=NOW)
    )
    assert await relay.deliver_pending(SLACK) == 1
    [update] = slack_api.calls_to("chat.update")
    assert update.args["ts"] == post.response["ts"]
    assert len(slack_api.calls_to("chat.postMessage")) == 1


async def test_an_escalation_is_a_second_message_naming_who_has_not_answered(
    journal: SqliteJournal, relay: NotificationRelay, slack_api: Any, smtp_server: Any
) -> None:
    policy = policy_for(approvers=("product-manager", "tech-lead"),
                        response_time=timedelta(minutes=30), emergency=False,
                        config=ApprovalConfig())  # fmt: skip
    request = ApprovalRequest(policy=policy, requested_at=CONTRACT_NOW, requester="rita")
    rid = await plant(journal, status=RemediationStatus.AWAITING_APPROVAL, approval=request)
    await journal.enqueue(notice_messages(remediation_id=rid, stage=Stage.PLANNED,
                                          channels=(SLACK,), at=CONTRACT_NOW))  # fmt: skip
    assert await relay.deliver_pending(SLACK) == 1
    timer = ApprovalTimer(
        journal=journal, clock=Clock(CONTRACT_NOW + timedelta(minutes=31)),
        notice_channels=(SLACK, EMAIL),
        approvers_by_role={"tech-lead": ["lee"], "product-manager": ["pam", "rita"]},
    )  # fmt: skip
    assert await timer.run_once() == 1
    assert await relay.deliver_pending(SLACK) == 1
    first, escalation = slack_api.calls_to("chat.postMessage")
    assert escalation.args["channel"] == "#remediator"  # approvals.escalation_channel
    assert first.args["channel"] == "#alerts"
    text = json.dumps(escalation.args["blocks"])
    assert "Not answered: product-manager (pam)" in text
    assert "Not answered: tech-lead (lee)" in text
    assert "requested by rita" in text
    assert slack_api.calls_to("chat.update") == []  # the plan's own message is left alone
    assert await relay.deliver_pending(EMAIL) == 1
    [mail] = smtp_server.messages
    assert mail["Subject"] == "[remediator] no answer in time: checkout: rollback awaiting approval"
    assert await timer.run_once() == 0  # escalated once
    assert await relay.deliver_pending(SLACK) == 0


async def test_slack_down_delays_the_notice_and_it_arrives_once_after_recovery(
    journal: SqliteJournal, relay: NotificationRelay, slack_api: Any
) -> None:
    slack_api.set_down(True)
    rid = await plan_one_remediation(journal)  # the decision does not wait for Slack
    with pytest.raises(TemporaryError):
        await relay.deliver_pending(SLACK)
    [pending] = await outbox_messages(journal, SLACK, limit=10)
    assert pending.attempts == 1
    slack_api.set_down(False)
    assert await relay.deliver_pending(SLACK) == 1
    assert await relay.deliver_pending(SLACK) == 0
    assert len(slack_api.calls_to("chat.postMessage")) == 1
    assert await journal.slack_ref(rid) is not None


async def test_smtp_down_delays_mail_and_it_arrives_once_after_recovery(
    journal: SqliteJournal, relay: NotificationRelay, smtp_server: Any
) -> None:
    await plan_one_remediation(journal)
    smtp_server.stop()
    try:
        with pytest.raises(TemporaryError):
            await relay.deliver_pending(EMAIL)
    finally:
        smtp_server.endpoints = smtp_server.start({})
    # The peer may come back on a new port; point the relay's notifier at it.
    host, port = smtp_server.endpoints["smtp"].rsplit(":", 1)
    relay._email = EmailNotifier(
        host=host, port=int(port), security="none", sender="remediator@example.test",
        username=smtp_server.endpoints["smtp_user"],
        password=SecretStr(smtp_server.endpoints["smtp_password"]), timeout=5.0,
    )  # fmt: skip
    assert await relay.deliver_pending(EMAIL) == 1
    assert await relay.deliver_pending(EMAIL) == 0
    assert len(smtp_server.messages) == 1
