"""Post-remediation checks against the real Prometheus peer."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from remediator.connectors.kubernetes.verify import http_health, prometheus_query_empty
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
