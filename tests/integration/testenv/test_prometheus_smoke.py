"""A Prometheus alerting rule fires and reaches the Alertmanager peer."""

from __future__ import annotations

import time
from typing import Any

import pytest

pytestmark = pytest.mark.integration


def test_rule_fires_into_alertmanager(prometheus: Any, alertmanager: Any) -> None:
    prometheus.configure(
        rules=[
            {
                "alert": "TestenvAlwaysFiring",
                "expr": "vector(1) > 0",
                "for": "0s",
                "labels": {"service": "smoke"},
                "annotations": {"summary": "always firing"},
            }
        ]
    )
    try:
        deadline = time.monotonic() + 30
        names: set[str] = set()
        while time.monotonic() < deadline:
            names = {a["labels"].get("alertname", "") for a in alertmanager.alerts()}
            if "TestenvAlwaysFiring" in names:
                break
            time.sleep(0.5)
        assert "TestenvAlwaysFiring" in names, f"alertmanager holds only {names}"
        [firing] = [
            a for a in prometheus.alerts() if a["labels"]["alertname"] == "TestenvAlwaysFiring"
        ]
        assert firing["state"] == "firing"
    finally:
        prometheus.configure(rules=[])


def test_self_scrape_gives_series(prometheus: Any) -> None:
    deadline = time.monotonic() + 20
    result: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not result:
        result = prometheus.query('up{job="prometheus"}')
        time.sleep(0.5)
    assert result, "no up{job='prometheus'} series within 20s"
    assert result[0]["value"][1] == "1"


def test_invalid_rule_is_rejected(prometheus: Any) -> None:
    from tests.env.base import PeerError

    with pytest.raises(PeerError, match="reload rejected"):
        prometheus.configure(rules=[{"alert": "Broken", "expr": "vector(1) >"}])
    prometheus.configure(rules=[])  # a valid config loads again
