"""Post-remediation checks against the real Prometheus peer."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from remediator.connectors.kubernetes.verify import http_health
from remediator.connectors.prometheus import prometheus_query_empty
from remediator.domain.errors import PermanentError, TemporaryError

pytestmark = pytest.mark.integration


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def test_prometheus_query_empty(prometheus: Any) -> None:
    url = prometheus.endpoints["prometheus_url"]
    empty = await prometheus_query_empty(
        url, 'up{job="no-such-job"}', timeout_seconds=5, poll_seconds=0.5
    )
    assert empty.ok, empty

    firing = await prometheus_query_empty(url, "vector(1)", timeout_seconds=1.5, poll_seconds=0.5)
    assert not firing.ok
    assert "1 series" in firing.detail

    with pytest.raises(PermanentError, match="rejected"):
        await prometheus_query_empty(url, "up{", timeout_seconds=2, poll_seconds=0.5)
    with pytest.raises(PermanentError, match="scalar"):
        await prometheus_query_empty(url, "scalar(vector(1))", timeout_seconds=2)

    with pytest.raises(TemporaryError):
        await prometheus_query_empty(closed_port_url(), "up", timeout_seconds=1, poll_seconds=0.5)


async def test_http_health(prometheus: Any) -> None:
    url = prometheus.endpoints["prometheus_url"].rstrip("/")
    assert (await http_health(f"{url}/-/healthy", timeout_seconds=5)).ok
    missing = await http_health(f"{url}/no-such-page", timeout_seconds=5)
    assert not missing.ok and "404" in missing.detail
    down = await http_health(closed_port_url() + "/healthz", timeout_seconds=2)
    assert not down.ok


async def test_a_condition_clears_within_the_window_against_real_prometheus(
    prometheus: Any,
) -> None:
    from remediator.connectors.prometheus import Prometheus

    url = prometheus.endpoints["prometheus_url"]
    # Prometheus' own clock decides: the series is there until "now + 2s", then gone.
    until = float(prometheus.query("vector(time())")[0]["value"][1]) + 2
    query = f'label_replace(vector(time()) < {until}, "service", "checkout", "", "")'
    assert prometheus.query(query), "the condition should hold at first"
    verdict = await Prometheus(base_url=url, poll_seconds=0.5).wait_until_empty(
        query, window_seconds=30, match_labels={"service": "checkout"}
    )
    assert verdict.ok, verdict
    assert verdict.polls >= 2  # it held at first, then cleared


async def test_series_of_other_services_do_not_hold_the_condition(prometheus: Any) -> None:
    from remediator.connectors.prometheus import Prometheus

    url = prometheus.endpoints["prometheus_url"]
    other = 'label_replace(vector(1), "service", "payments", "", "")'
    cleared = await Prometheus(base_url=url, poll_seconds=0.5).wait_until_empty(
        other, window_seconds=2, match_labels={"service": "checkout"}
    )
    assert cleared.ok and cleared.polls == 1
    held = await Prometheus(base_url=url, poll_seconds=0.5).wait_until_empty(
        other, window_seconds=1.5, match_labels={"service": "payments"}
    )
    assert not held.ok and held.series[0]["service"] == "payments"
