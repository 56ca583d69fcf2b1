"""The daemon, configured from the environment, tells Slack and email about decisions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.e2e.daemon import Daemon
from tests.e2e.test_alertmanager_intake import post, wait_for
from tests.unit.payloads import alert, payload

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


@pytest.fixture
def notifying_daemon(tmp_path: Path, slack_api: Any, smtp_server: Any) -> Iterator[Daemon]:
    slack_api.reset()
    smtp_server.clear()
    host, port = smtp_server.endpoints["smtp"].rsplit(":", 1)
    daemon = Daemon(
        tmp_path / "daemon",
        extra_env={
            "REMEDIATOR_SLACK__TOKEN": slack_api.endpoints["slack_token"],
            "REMEDIATOR_SLACK__BASE_URL": slack_api.endpoints["slack_api_url"],
            "REMEDIATOR_SLACK__DEFAULT_CHANNEL": "#alerts",
            "REMEDIATOR_EMAIL__SMTP_HOST": host,
            "REMEDIATOR_EMAIL__SMTP_PORT": port,
            "REMEDIATOR_EMAIL__SECURITY": "none",
            "REMEDIATOR_EMAIL__USERNAME": smtp_server.endpoints["smtp_user"],
            "REMEDIATOR_EMAIL__PASSWORD": smtp_server.endpoints["smtp_password"],
            "REMEDIATOR_EMAIL__RECIPIENTS": '["oncall@example.test"]',
            "REMEDIATOR_HTTP__PUBLIC_URL": "https://remediator.example.test",
        },
    )
    daemon.start()
    yield daemon
    assert daemon.stop() == 0
    slack_api.reset()


def test_a_decision_people_must_hear_about_reaches_slack_and_email(
    notifying_daemon: Daemon, slack_api: Any, smtp_server: Any
) -> None:
    # No deploy history: no healthy revision to roll back to, which people must hear.
    status, _ = post(
        notifying_daemon, orjson.dumps(payload([alert(name="HighErrorRate", fingerprint="n1")]))
    )
    assert status == 200
    [call] = slack_api.wait_for_calls("chat.postMessage", 1, timeout=30)
    blocks = call.args["blocks"]
    text = json.dumps(json.loads(blocks) if isinstance(blocks, str) else blocks)
    assert "checkout" in text and "HighErrorRate" in text
    assert "https://remediator.example.test/api/v1/remediations/" in text
    [mail] = smtp_server.wait_for_messages(1, timeout=30)
    assert "checkout" in mail["Subject"]
    wait_for(
        lambda: notifying_daemon.metric("remediator_webhook_requests_total") >= 1,
        timeout=5,
        what="metrics",
    )
    assert len(slack_api.calls_to("chat.postMessage")) == 1
    sent = 'remediator_notifications_total{{channel="{}",result="sent"}}'
    for channel in ("slack", "email"):  # counted just after the peer took it
        wait_for(
            lambda: notifying_daemon.metric(sent.format(channel)) == 1,  # noqa: B023
            timeout=10, what=f"the {channel} notice counted as sent",
        )  # fmt: skip
    assert notifying_daemon.metric("remediator_notifications_total") == 2  # nothing else
