"""slack_sdk's AsyncWebClient works against the Slack stand-in, including a 429."""

from __future__ import annotations

from typing import Any

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

pytestmark = pytest.mark.integration


@pytest.fixture
def slack(slack_api: Any) -> Any:
    slack_api.reset()
    yield slack_api
    slack_api.reset()


def client_for(slack: Any, token: str | None = None) -> AsyncWebClient:
    return AsyncWebClient(
        token=token or slack.endpoints["slack_token"], base_url=slack.endpoints["slack_api_url"]
    )


async def test_post_then_update_round_trip(slack: Any) -> None:
    client = client_for(slack)
    auth = await client.auth_test()
    assert auth["ok"] is True
    assert auth["user_id"]

    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*Rolling back* checkout"}}]
    posted = await client.chat_postMessage(channel="#alerts", text="Rolling back", blocks=blocks)
    assert posted["ok"] is True
    assert posted["channel"].startswith("C")
    assert posted["message"]["blocks"] == blocks

    updated = await client.chat_update(
        channel=posted["channel"], ts=posted["ts"], text="Rolled back"
    )
    assert updated["ts"] == posted["ts"]
    assert updated["text"] == "Rolled back"

    [call] = slack.calls_to("chat.update")
    assert call.token == slack.endpoints["slack_token"]
    assert slack.messages[posted["channel"]][posted["ts"]]["text"] == "Rolled back"


async def test_api_errors_have_slack_codes(slack: Any) -> None:
    client = client_for(slack)
    with pytest.raises(SlackApiError) as err:
        await client.chat_postMessage(channel="#no-such-channel", text="x")
    assert err.value.response["error"] == "channel_not_found"
    with pytest.raises(SlackApiError) as err:
        await client.chat_update(channel="#alerts", ts="1.000001", text="x")
    assert err.value.response["error"] == "message_not_found"
    with pytest.raises(SlackApiError) as err:
        await client.chat_postMessage(
            channel="#alerts", text="fallback", blocks=[{"type": "nonsense"}]
        )
    assert err.value.response["error"] == "invalid_blocks"
    with pytest.raises(SlackApiError) as err:
        await client_for(slack, token="xoxb-wrong").auth_test()
    assert err.value.response["error"] == "invalid_auth"


async def test_rate_limit_then_retry(slack: Any) -> None:
    slack.fail_next(1, status=429, retry_after=1)
    with pytest.raises(SlackApiError) as err:
        await client_for(slack).chat_postMessage(channel="#alerts", text="x")
    assert err.value.response.status_code == 429
    assert err.value.response.headers["Retry-After"] == "1"
    assert err.value.response["error"] == "ratelimited"

    slack.fail_next(1, status=429, retry_after=1)
    client = client_for(slack)
    client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=1))
    posted = await client.chat_postMessage(channel="#alerts", text="after the limit")
    assert posted["ok"] is True
    assert [c.http_status for c in slack.calls_to("chat.postMessage")] == [429, 429, 200]


async def test_down_refuses_connections(slack: Any) -> None:
    slack.set_down(True)
    with pytest.raises(Exception, match=r"(?i)connect"):
        await client_for(slack).auth_test()
    slack.set_down(True, mode="503")
    with pytest.raises(SlackApiError) as err:
        await client_for(slack).auth_test()
    assert err.value.response.status_code == 503
    slack.set_down(False)
    assert (await client_for(slack).auth_test())["ok"] is True
