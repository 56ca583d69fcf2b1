"""SlackNotifier against the local Slack Web API stand-in (tests/env/slack.py)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from remediator.connectors.slack import SlackNotifier, SlackRejected
from remediator.domain.errors import PermanentError, TemporaryError
from remediator.domain.lifecycle import RemediationStatus
from remediator.domain.notices import slack_blocks, slack_text
from remediator.domain.record import TimelineEntry
from tests.unit.notify import samples
from tests.unit.notify.blockkit import assert_valid_blocks

pytestmark = pytest.mark.integration


@pytest.fixture
def slack(slack_api: Any) -> Iterator[Any]:
    slack_api.reset()
    yield slack_api
    slack_api.reset()


@pytest.fixture
async def notifier(slack: Any) -> AsyncIterator[SlackNotifier]:
    n = SlackNotifier(
        token=slack.endpoints["slack_token"],
        base_url=slack.endpoints["slack_api_url"],
        backoff_factor=0.05,
    )
    yield n
    await n.close()


def decoded_blocks(call: Any) -> Any:
    import json

    blocks = call.args["blocks"]
    return json.loads(blocks) if isinstance(blocks, str) else blocks


async def test_post_then_update_in_place(slack: Any, notifier: SlackNotifier) -> None:
    await notifier.check()
    running = samples.succeeded(status=RemediationStatus.RUNNING, finished_at=None)
    blocks = slack_blocks(running, record_url=samples.RECORD_URL)
    ref = await notifier.post(channel="#alerts", blocks=blocks, text=slack_text(running))
    assert ref.channel == slack.channels["alerts"]

    done = samples.succeeded(
        timeline=(
            *running.timeline,
            TimelineEntry(at=samples.at(301), step="notify", status="done"),
        )
    )
    new_blocks = slack_blocks(done, record_url=samples.RECORD_URL)
    await notifier.update(ref=ref, blocks=new_blocks, text=slack_text(done))

    [post] = slack.calls_to("chat.postMessage")
    [update] = slack.calls_to("chat.update")
    assert [c.method for c in slack.calls] == ["auth.test", "chat.postMessage", "chat.update"]
    assert post.http_status == update.http_status == 200
    assert post.response["ok"] and update.response["ok"]
    assert post.token == update.token == slack.endpoints["slack_token"]
    assert post.args["channel"] == "#alerts"
    assert update.args["channel"] == ref.channel
    assert update.args["ts"] == ref.ts == post.response["ts"]
    assert decoded_blocks(post) == blocks
    assert decoded_blocks(update) == new_blocks
    assert_valid_blocks(decoded_blocks(update))
    assert "running" in post.args["text"]
    assert "succeeded" in update.args["text"]
    # One message per remediation: the update replaced the content in place.
    [message] = slack.messages[ref.channel].values()
    assert message["blocks"] == new_blocks
    assert "edited" in message


async def test_rate_limit_is_retried_after_retry_after(slack: Any, notifier: SlackNotifier) -> None:
    record = samples.succeeded()
    slack.fail_next(1, status=429, retry_after=1)
    started = time.monotonic()
    ref = await notifier.post(
        channel="#alerts", blocks=slack_blocks(record, record_url=None), text=slack_text(record)
    )
    elapsed = time.monotonic() - started
    calls = slack.calls_to("chat.postMessage")
    assert [c.http_status for c in calls] == [429, 200]
    assert calls[0].response["error"] == "ratelimited"
    assert calls[1].response["ts"] == ref.ts
    assert elapsed >= 1.0


async def test_rate_limit_past_retries_is_temporary_with_retry_after(slack: Any) -> None:
    notifier = SlackNotifier(
        token=slack.endpoints["slack_token"],
        base_url=slack.endpoints["slack_api_url"],
        max_retries=1,
    )
    try:
        slack.fail_next(2, status=429, retry_after=1)
        with pytest.raises(TemporaryError) as err:
            await notifier.post(channel="#alerts", blocks=[], text="x")
        assert err.value.delay == 1.0
        assert [c.http_status for c in slack.calls_to("chat.postMessage")] == [429, 429]
    finally:
        await notifier.close()


async def test_long_retry_after_is_left_to_the_outbox(slack: Any) -> None:
    notifier = SlackNotifier(
        token=slack.endpoints["slack_token"],
        base_url=slack.endpoints["slack_api_url"],
        max_rate_limit_wait=5,
    )
    try:
        slack.fail_next(1, status=429, retry_after=120)
        started = time.monotonic()
        with pytest.raises(TemporaryError) as err:
            await notifier.post(channel="#alerts", blocks=[], text="x")
        assert time.monotonic() - started < 5
        assert err.value.delay == 120.0
        assert len(slack.calls_to("chat.postMessage")) == 1
    finally:
        await notifier.close()


async def test_server_errors_are_retried_with_backoff(slack: Any, notifier: SlackNotifier) -> None:
    slack.fail_next(2, status=503, retry_after=None)
    ref = await notifier.post(channel="#alerts", blocks=[], text="after two 503s")
    assert [c.http_status for c in slack.calls_to("chat.postMessage")] == [503, 503, 200]
    assert ref.ts


async def test_server_errors_past_retries_are_temporary(
    slack: Any, notifier: SlackNotifier
) -> None:
    slack.fail_next(3, status=500, retry_after=None)
    with pytest.raises(TemporaryError, match="HTTP 500"):
        await notifier.post(channel="#alerts", blocks=[], text="x")


async def test_slack_down_is_temporary(slack: Any, notifier: SlackNotifier) -> None:
    slack.set_down(True)
    started = time.monotonic()
    with pytest.raises(TemporaryError) as err:
        await notifier.post(channel="#alerts", blocks=[], text="x")
    assert time.monotonic() - started < 5  # a few quick retries, not a hang
    assert err.value.__cause__ is not None  # raised from the aiohttp error
    assert slack.calls_to("chat.postMessage") == []

    slack.set_down(True, mode="503")
    with pytest.raises(TemporaryError, match="HTTP 503"):
        await notifier.post(channel="#alerts", blocks=[], text="x")

    slack.set_down(False)
    assert (await notifier.post(channel="#alerts", blocks=[], text="back")).ts


async def test_bad_token_is_permanent(slack: Any) -> None:
    notifier = SlackNotifier(token="xoxb-wrong", base_url=slack.endpoints["slack_api_url"])
    try:
        with pytest.raises(PermanentError) as err:
            await notifier.post(channel="#alerts", blocks=[], text="x")
        assert isinstance(err.value, SlackRejected)
        assert err.value.code == "invalid_auth"
        with pytest.raises(SlackRejected, match="invalid_auth"):
            await notifier.check()
    finally:
        await notifier.close()
    assert len(slack.calls_to("chat.postMessage")) == 1  # never retried


@pytest.mark.parametrize(
    ("channel", "blocks", "code"),
    [
        ("#no-such-channel", [], "channel_not_found"),
        ("#alerts", [{"type": "nonsense"}], "invalid_blocks"),
    ],
)
async def test_bad_requests_are_permanent(
    slack: Any, notifier: SlackNotifier, channel: str, blocks: list[dict[str, Any]], code: str
) -> None:
    with pytest.raises(SlackRejected) as err:
        await notifier.post(channel=channel, blocks=blocks, text="x")
    assert err.value.code == code


async def test_update_of_unknown_message_is_permanent(slack: Any, notifier: SlackNotifier) -> None:
    from remediator.domain.notices import SlackMessageRef

    ref = SlackMessageRef(channel=slack.channels["alerts"], ts="1.000001")
    with pytest.raises(SlackRejected) as err:
        await notifier.update(ref=ref, blocks=[], text="x")
    assert err.value.code == "message_not_found"


async def test_closed_notifier_refuses_work(slack: Any) -> None:
    notifier = SlackNotifier(
        token=slack.endpoints["slack_token"], base_url=slack.endpoints["slack_api_url"]
    )
    await notifier.post(channel="#alerts", blocks=[], text="x")
    await notifier.close()
    await notifier.close()  # idempotent
    with pytest.raises(RuntimeError):
        await notifier.post(channel="#alerts", blocks=[], text="x")


async def test_a_reply_only_the_clicker_sees(slack: Any, notifier: SlackNotifier) -> None:
    await notifier.ephemeral(channel="#alerts", user="U0LEE", text="You approved rem_1 as lee.")
    [call] = slack.calls_to("chat.postEphemeral")
    assert call.response["ok"] is True
    assert slack.ephemerals == [
        {"channel": slack.channels["alerts"], "user": "U0LEE", "text": "You approved rem_1 as lee."}
    ]
    with pytest.raises(SlackRejected) as caught:
        await notifier.ephemeral(channel="#nowhere", user="U0LEE", text="x")
    assert caught.value.code == "channel_not_found"


async def test_a_waiting_plans_buttons_are_accepted_by_slack(
    slack: Any, notifier: SlackNotifier
) -> None:
    record = samples.awaiting_approval()
    blocks = slack_blocks(record, record_url=None, buttons=True)
    ref = await notifier.post(channel="#alerts", blocks=blocks, text=slack_text(record))
    stored = slack.message(ref.channel, ref.ts)
    actions = [b for b in stored["blocks"] if b["type"] == "actions"]
    assert [e["action_id"] for e in actions[0]["elements"]] == [
        "remediator.approve", "remediator.reject",
    ]  # fmt: skip
