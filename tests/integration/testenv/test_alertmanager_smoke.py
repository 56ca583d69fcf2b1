"""Alertmanager delivers a posted alert to a local webhook, with bearer auth."""

from __future__ import annotations

import asyncio
import base64
import uuid
from typing import Any

import pytest
from aiohttp import web

pytestmark = pytest.mark.integration
SMOKE = uuid.uuid4().hex[:8]  # this module's alerts, told from anything else in the peer


async def _deliver_one(alertmanager: Any, **auth: Any) -> tuple[str | None, dict[str, Any]]:
    """Point Alertmanager at a local webhook, post one alert, return what arrived for it.

    The peer is shared by the session: Prometheus may still be sending an earlier test's
    alerts (resolved ones, for a while), so only this test's own alert counts.
    """
    received: asyncio.Queue[tuple[str | None, dict[str, Any]]] = asyncio.Queue()

    async def hook(request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("groupLabels", {}).get("smoke") == SMOKE:
            await received.put((request.headers.get("Authorization"), body))
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        alertmanager.configure(
            webhook_url=f"http://127.0.0.1:{port}/hook",
            group_by=["alertname", "service", "smoke"],
            **auth,
        )
        alertmanager.post_alerts(
            [
                {
                    "labels": {"alertname": "HighErrorRate", "service": "checkout", "smoke": SMOKE},
                    "annotations": {"summary": "smoke"},
                }
            ]
        )
        return await asyncio.wait_for(received.get(), timeout=30)
    finally:
        alertmanager.reset()
        await runner.cleanup()


async def test_alert_reaches_webhook_with_bearer_token(alertmanager: Any) -> None:
    auth, payload = await _deliver_one(alertmanager, bearer_token="s3cret-token")

    assert auth == "Bearer s3cret-token"
    assert payload["version"] == "4"
    assert payload["status"] == "firing"
    assert payload["receiver"] == "remediator"
    assert payload["groupLabels"] == {
        "alertname": "HighErrorRate",
        "service": "checkout",
        "smoke": SMOKE,
    }
    [alert] = payload["alerts"]
    assert alert["labels"]["service"] == "checkout"
    assert alert["endsAt"] == "0001-01-01T00:00:00Z"


async def test_alert_reaches_webhook_with_basic_auth(alertmanager: Any) -> None:
    auth, payload = await _deliver_one(alertmanager, basic_auth=("am", "pw"))

    assert auth == "Basic " + base64.b64encode(b"am:pw").decode()
    assert payload["version"] == "4"


def test_bad_config_is_rejected_and_old_one_stays(alertmanager: Any) -> None:
    from tests.env.base import PeerError

    with pytest.raises(PeerError, match="reload rejected"):
        alertmanager.configure(webhook_url="not a url")
    alertmanager.reset()  # a valid config loads again
