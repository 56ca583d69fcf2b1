"""A client's mistake is a 4xx naming the field, never a 5xx, a traceback or a stop:
hostile input against the daemon as a process, which keeps deciding afterwards."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from tests.e2e.conftest import daemon
from tests.e2e.daemon import Daemon
from tests.e2e.test_alertmanager_intake import post, wait_for
from tests.unit.payloads import alert, payload

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
__all__ = ["daemon"]

BAD_TIMES = [
    ("0001-01-01T00:00:00Z", "startsAt"),  # Go's zero time as a start
    ("0001-01-01T00:10:00+01:00", "startsAt"),  # before year 1 in UTC
    ("9999-12-31T23:59:59-01:00", "startsAt"),  # after year 9999 in UTC
]


def raw_request(daemon: Daemon, head: bytes) -> int:
    """Send bytes no well-behaved client library would; return the status code."""
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as conn:
        conn.sendall(head)
        status_line = conn.makefile("rb").readline()
    return int(status_line.split()[1])


def test_hostile_input_is_answered_4xx_and_deciding_goes_on(daemon: Daemon) -> None:
    answers: list[tuple[str, int, Any]] = []
    for value, field in BAD_TIMES:
        body = payload([alert(starts_at=value, fingerprint=f"bad-{value}")])
        code, answer = post(daemon, orjson.dumps(body))
        answers.append((value, code, answer))
        assert code == 400, (value, answer)
        assert f"alerts[0].{field}" in answer["error"]

    for query in ("cursor=%C2%B2", "cursor=" + "9" * 5000, "cursor=-1", "limit=-1", "limit=x"):
        for route in ("/api/v1/signals", "/api/v1/remediations"):
            code, answer = daemon.get(f"{route}?{query}")
            assert code == 400, (route, query, answer)
            assert query.split("=")[0] in answer["error"]

    for header in (b"Bearer \xff\xfe\xfd", b"Basic \xc3(", b"Bearer", b"\x80"):
        head = b"GET /api/v1/signals HTTP/1.1\r\nHost: x\r\nAuthorization: " + header
        assert raw_request(daemon, head + b"\r\nConnection: close\r\n\r\n") == 401, header

    # Nothing hostile was journaled; the daemon still takes and decides good alerts.
    assert daemon.signals() == []
    good = payload([alert(starts_at=datetime.now(UTC).isoformat(), fingerprint="good")])
    code, answer = post(daemon, orjson.dumps(good))
    assert code == 200, answer
    wait_for(
        lambda: daemon.metric("remediator_decisions_total") >= 1, timeout=30, what="a decision"
    )
    assert daemon.metric('remediator_webhook_requests_total{code="400"}') == len(BAD_TIMES)
    assert daemon.metric('remediator_webhook_requests_total{code="500"}') == 0
    log = daemon.log_path.read_text()
    assert "Traceback" not in log
    assert " ERROR " not in log
