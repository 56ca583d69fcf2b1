"""/metrics of a running daemon: the default collectors, build info, OpenMetrics when the
scraper asks, the intake hops, the journal gauges, and every family it serves listed in
docs/metrics.md."""

from __future__ import annotations

import asyncio
import platform
import re
import urllib.request
from pathlib import Path

import orjson
import pytest

import remediator
from tests.e2e.daemon import Daemon
from tests.e2e.test_alertmanager_intake import post, wait_for
from tests.e2e.test_approvals import World, answer, hurried, request
from tests.unit.payloads import alert, payload

pytestmark = pytest.mark.e2e
__all__ = ["hurried"]  # the fixture: a daemon with approvals scaled down

DOCS = Path(__file__).resolve().parents[2] / "docs"
OPENMETRICS = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"


def scrape(daemon: Daemon, accept: str | None = None) -> tuple[str, str]:
    request = urllib.request.Request(daemon.url + "/metrics")  # noqa: S310 - loopback
    if accept is not None:
        request.add_header("Accept", accept)
    with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
        return resp.headers["Content-Type"], resp.read().decode()


def test_a_running_daemon_serves_every_documented_family(daemon: Daemon) -> None:
    alerts = [alert(name="HighErrorRate", fingerprint=f"m{i}") for i in range(2)]
    status, _ = post(daemon, orjson.dumps(payload(alerts)))
    assert status == 200
    wait_for(
        lambda: daemon.metric("remediator_decision_latency_seconds_count") == 2,
        timeout=30, what="two decisions",
    )  # fmt: skip
    assert daemon.metric("remediator_journal_latency_seconds_count") == 2
    wait_for(
        lambda: "remediator_circuit_open 0.0" in scrape(daemon)[1],
        timeout=30, what="the journal gauges' first read",
    )  # fmt: skip

    content_type, text = scrape(daemon)
    assert content_type.startswith("text/plain; version=0.0.4")
    build = f'remediator_build_info{{python="{platform.python_version()}",version="{remediator.__version__}"}} 1.0'
    assert build in text.splitlines()
    assert daemon.metric("process_resident_memory_bytes") > 0
    assert daemon.metric("process_open_fds") > 0
    assert "python_info{" in text
    assert "remediator_approvals_waiting 0.0" in text
    wait_for(
        lambda: "remediator_undecided_signals 0.0" in scrape(daemon)[1],
        timeout=30, what="the backlog gauge",
    )  # fmt: skip
    assert "remediator_undecided_age_seconds 0.0" in scrape(daemon)[1]

    documented = (DOCS / "metrics.md").read_text()
    served = set(re.findall(r"^# TYPE (\S+) ", text, flags=re.MULTILINE))
    served = {name for name in served if not name.endswith("_created")}
    assert len(served) > 30
    missing = sorted(name for name in served if f"| `{name}` |" not in documented)
    assert missing == [], "served but not in docs/metrics.md"

    content_type, om = scrape(daemon, OPENMETRICS)
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert om.endswith("# EOF\n")
    assert "# TYPE remediator_build info" in om
    assert "remediator_decision_latency_seconds_count 2.0" in om


@pytest.mark.integration
async def test_a_plan_waiting_for_approval_shows_in_the_gauge_until_rejected(
    hurried: World,
) -> None:
    daemon = hurried.daemon
    waiting = "remediator_approvals_waiting"
    item = request(daemon, "performance_degradation")
    await asyncio.to_thread(
        wait_for, lambda: daemon.metric(waiting) == 1, timeout=30, what="one plan waiting"
    )
    status, rejected = answer(daemon, item["id"], "lee", "reject")
    assert (status, rejected["status"]) == (200, "rejected")
    await asyncio.to_thread(
        wait_for, lambda: daemon.metric(waiting) == 0, timeout=30, what="none waiting"
    )
    assert daemon.metric("remediator_circuit_open") == 0
