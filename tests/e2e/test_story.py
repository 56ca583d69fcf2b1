"""Issue 16 acceptance: the full story with every peer real (tests/story.py).

A test application's error rate rises; real Prometheus, scraping it with the shipped
alerting rules (windows scaled down), fires HighErrorRate; real Alertmanager delivers it
to the daemon; the daemon rolls the Deployment back on the kwok cluster; the test
restores the error rate when the rollback lands, and the remediation succeeds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.story import Narrator, Story

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def test_a_bad_release_is_seen_alerted_rolled_back_and_recovers(
    tmp_path: Path, kube: Any, kafka: Any, prometheus: Any, alertmanager: Any
) -> None:
    lines: list[str] = []
    narrator = Narrator(say=lines.append)
    with Story(tmp_path, kube=kube, kafka=kafka, prometheus=prometheus,
               alertmanager=alertmanager, narrate=narrator) as story:  # fmt: skip
        outcome = story.run()
    done = outcome.remediation
    assert done["status"] == "succeeded", done
    assert outcome.signal["kind"] == "HighErrorRate"
    assert outcome.signal["labels"]["service"] == "storefront"
    assert done["rule"] == "high-error-rate-rollback"
    assert [s["kind"] for s in done["steps"]].count("rollout_undo") == 1
    assert outcome.image == "registry.example/app:v1"
    # Every hop was narrated, in order.
    said = "\n".join(lines)
    for hop in ("prometheus: HighErrorRate firing", "alertmanager: delivered",
                "remediator: rule high-error-rate-rollback plans", "is back on",
                f"remediation {done['id']} succeeded"):  # fmt: skip
        assert hop in said, said
