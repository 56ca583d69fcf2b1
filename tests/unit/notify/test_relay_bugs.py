"""A bug while delivering one notice (not a Slack or SMTP failure) gives that notice
up, with the error kept and counted, and never stops the notices after it."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from remediator.domain.notices import EmailRouting
from remediator.engine.decider import DecisionEngine
from remediator.engine.notify import EMAIL, NotificationRelay
from remediator.ingress.alertmanager import parse_payload, to_signals
from remediator.journal.sqlite import SqliteJournal
from remediator.rulefiles import load_rule_pack_from_path
from tests.unit.journal_helpers import outbox_messages
from tests.unit.payloads import alert, payload

RULES = Path(__file__).resolve().parents[3] / "rules"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


class Facts:
    async def replicas(self, *, service: str, namespace: str) -> tuple[int, int | None] | None:
        return (3, None)


class BuggyMail:
    """An EmailPort whose first send hits a bug; later sends work."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.calls = 0

    async def send(
        self,
        *,
        to: Sequence[str],
        subject: str,
        text: str,
        html: str,
        message_id: str | None = None,
    ) -> None:
        self.calls += 1
        if self.calls == 1:
            raise KeyError("severity")
        self.sent.append(subject)


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[SqliteJournal]:
    j = SqliteJournal(path=tmp_path / "journal.db")
    await j.open()
    yield j
    await j.close()


async def test_a_bug_in_one_notice_gives_it_up_and_the_next_is_delivered(
    journal: SqliteJournal, tmp_path: Path
) -> None:
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
                            dry_run=False, notice_channels=(EMAIL,), clock=lambda: NOW)  # fmt: skip
    assert await engine.run_once() == 2
    mail = BuggyMail()
    errors: list[str] = []
    relay = NotificationRelay(
        journal=journal,
        holder="test-1",
        email=mail,
        email_routes=EmailRouting(default=("oncall@example.test",)),
        clock=lambda: NOW,
        on_internal_error=errors.append,
    )
    assert await relay.deliver_pending(EMAIL) == 2
    assert len(mail.sent) == 1
    assert errors == ["KeyError"]
    assert await outbox_messages(journal, EMAIL, limit=10) == []
    with sqlite3.connect(tmp_path / "journal.db") as conn:
        kept = conn.execute("SELECT last_error FROM outbox WHERE last_error IS NOT NULL").fetchall()
    assert kept == [("dead: internal error: KeyError: 'severity'",)]
