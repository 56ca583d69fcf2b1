"""A signal whose decision raises (an injected bug, armed with the decider.signal
failpoint for one service) is journaled as internal_error and notified; every other
service is still decided, and a restart neither crash-loops nor decides it again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.e2e.daemon import Daemon
from tests.e2e.test_alertmanager_intake import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


@pytest.fixture
def poisoned_daemon(tmp_path: Path, smtp_server: Any) -> Iterator[Daemon]:
    smtp_server.clear()
    host, port = smtp_server.endpoints["smtp"].rsplit(":", 1)
    d = Daemon(
        tmp_path / "daemon",
        extra_env={
            "REMEDIATOR_FAILPOINTS": "decider.signal:payments",
            "REMEDIATOR_EMAIL__SMTP_HOST": host,
            "REMEDIATOR_EMAIL__SMTP_PORT": port,
            "REMEDIATOR_EMAIL__SECURITY": "none",
            "REMEDIATOR_EMAIL__USERNAME": smtp_server.endpoints["smtp_user"],
            "REMEDIATOR_EMAIL__PASSWORD": smtp_server.endpoints["smtp_password"],
            "REMEDIATOR_EMAIL__RECIPIENTS": '["oncall@example.test"]',
        },
    )
    d.start()
    yield d
    if d.proc is not None:
        assert d.stop() == 0


def test_a_poison_signal_is_decided_as_internal_error_and_deciding_goes_on(
    poisoned_daemon: Daemon, smtp_server: Any
) -> None:
    d = poisoned_daemon
    d.post_alert("HighErrorRate", "payments", "payments", "poison-1")
    d.post_alert("HighErrorRate", "checkout", "shop", "good-1")
    wait_for(lambda: len(d.remediations()) >= 2, timeout=30, what="both decided")
    by_service = {r["service"]: r for r in d.remediations()}
    assert by_service["payments"]["reason"] == "internal_error"
    assert by_service["payments"]["status"] == "skipped"
    assert by_service["checkout"]["reason"] != "internal_error"
    _, detail = d.get(f"/api/v1/remediations/{by_service['payments']['id']}")
    assert "InjectedFault" in orjson.dumps(detail).decode()
    assert d.metric('remediator_internal_errors_total{component="decider"}') >= 1
    assert d.metric('remediator_decisions_total{outcome="no_action",reason="internal_error"}') == 1
    # People hear of it like of any other skip they must act on.
    mails = smtp_server.wait_for_messages(2, timeout=30)
    assert any("payments" in m["Subject"] for m in mails)

    # A restart with the fault still armed: no crash loop, nothing decided twice.
    assert d.stop() == 0
    d.start()
    d.post_alert("HighErrorRate", "checkout", "shop", "good-2")
    wait_for(lambda: len(d.remediations()) >= 3, timeout=30, what="the new alert decided")
    assert d.metric('remediator_decisions_total{outcome="no_action",reason="internal_error"}') == 0
    assert [r["service"] for r in d.remediations()].count("payments") == 1
