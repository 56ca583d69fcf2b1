"""Issue 15 acceptance, the Slack part: a rollback request approved with Slack's buttons,
through the daemon, against the kwok control plane and the Slack stand-in.

The stand-in plays Slack: it holds the message the daemon posted, and a click on one of
its buttons is the block_actions request Slack would send, signed with the app's signing
secret, posted to the daemon's Request URL. Forged, expired and replayed requests are
refused and approve nothing; the right two people clicking Approve runs the plan once,
and the message is updated in place with who did what.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.e2e.test_approvals import (
    REVISION,
    World,
    build_world,
    deployment,
    remediation,
    request,
    service_of,
)
from tests.polling import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

SCENARIO = "severe_functional_defect"  # product manager + tech lead
SLACK_USERS = {"rita": "U0RITA", "pam": "U0PAM", "lee": "U0LEE", "nobody": "U0NOBODY"}
APPROVE, REJECT = "remediator.approve", "remediator.reject"


@pytest.fixture
def slack_world(tmp_path: Path, kube: Any, kafka: Any, slack_api: Any) -> Iterator[World]:
    slack_api.reset()
    built = build_world(tmp_path, kube, kafka, [SCENARIO], {
        "REMEDIATOR_SLACK__TOKEN": slack_api.endpoints["slack_token"],
        "REMEDIATOR_SLACK__BASE_URL": slack_api.endpoints["slack_api_url"],
        "REMEDIATOR_SLACK__DEFAULT_CHANNEL": "#alerts",
        "REMEDIATOR_SLACK__SIGNING_SECRET": slack_api.signing_secret,
    }, slack_users=SLACK_USERS)  # fmt: skip
    yield built
    assert built.daemon.stop() == 0
    slack_api.reset()


def actions_of(message: dict[str, Any]) -> list[str]:
    return [
        element["action_id"]
        for block in message.get("blocks") or ()
        if block["type"] == "actions"
        for element in block["elements"]
    ]


def text_of(message: dict[str, Any]) -> str:
    return orjson.dumps(message.get("blocks")).decode()


async def test_a_slack_button_approval_runs_the_plan_once_and_forgeries_approve_nothing(
    slack_world: World, kube: Any, slack_api: Any
) -> None:
    daemon = slack_world.daemon
    url = f"{daemon.url}/api/v1/slack/interactions"
    rid = request(daemon, SCENARIO)["id"]
    # The request's message carries Approve and Reject.
    [posted] = await asyncio.to_thread(slack_api.wait_for_calls, "chat.postMessage", 1, 60)
    channel, ts = posted.response["channel"], posted.response["ts"]
    assert actions_of(slack_api.message(channel, ts)) == [APPROVE, REJECT]

    def click(who: str, action: str = APPROVE, **forgery: Any) -> tuple[int, Any]:
        return slack_api.click(url, channel=channel, ts=ts, action_id=action,
                               user_id=SLACK_USERS[who], user_name=who, **forgery)  # fmt: skip

    def votes() -> list[str]:
        return [a["principal"] for a in remediation(daemon, rid)["approval"]["approvers"]]

    # Forged (signed with a guess), expired (captured 10 minutes ago): refused, nothing counted.
    status, answer = await asyncio.to_thread(click, "lee", secret="a-guessed-signing-secret")
    assert (status, answer["error"].split(":")[0]) == (401, "X-Slack-Signature")
    status, answer = await asyncio.to_thread(click, "lee", timestamp=int(time.time()) - 600)
    assert (status, answer["error"].split(":")[0]) == (401, "X-Slack-Request-Timestamp")
    assert votes() == []
    # The requester's own click is refused (four eyes), and she is told why.
    assert (await asyncio.to_thread(click, "rita"))[0] == 200
    told = await eventually(lambda: asyncio.to_thread(list, slack_api.ephemerals),
                            lambda sent: len(sent) == 1, timeout=30,
                            what="the reply to rita")  # fmt: skip
    assert told[0]["user"] == "U0RITA" and "four eyes" in told[0]["text"]
    assert votes() == []

    # The product manager approves with the button: one of two seats.
    assert await asyncio.to_thread(click, "pam") == (200, {"ok": True})
    assert votes() == ["pam"]
    # Replaying her signed request (the very same bytes) is refused.
    status, answer = await asyncio.to_thread(slack_api.replay_last_click)
    assert (status, answer["error"]) == (
        401, "X-Slack-Signature: already used (a replayed request)",
    )  # fmt: skip
    # The message is updated in place: who approved, who is awaited; the buttons stay.
    updated = await eventually(
        lambda: asyncio.to_thread(slack_api.message, channel, ts),
        lambda m: "*pam* as product-manager" in text_of(m),
        timeout=30, what="the message to show pam's approval",
    )  # fmt: skip
    assert "waiting for tech-lead" in text_of(updated)
    assert actions_of(updated) == [APPROVE, REJECT]

    # The tech lead approves: the plan runs, once.
    assert await asyncio.to_thread(click, "lee") == (200, {"ok": True})
    done = await eventually(
        lambda: asyncio.to_thread(remediation, daemon, rid),
        lambda r: r["status"] in ("succeeded", "failed", "needs_human"),
        timeout=120, what=f"{rid} to finish",
    )  # fmt: skip
    assert done["status"] == "succeeded", done
    assert [s["kind"] for s in done["steps"]].count("rollout_undo") == 1
    assert [a["principal"] for a in done["approval"]["approvers"]] == ["pam", "lee"]
    final = await deployment(kube, slack_world.namespaces[service_of(SCENARIO)])
    assert final.spec.template.spec.containers[0].image == "registry.example/app:v1"
    assert final.metadata.annotations[REVISION] == "3"
    # The same message (no second one) now says it succeeded, names both approvers, and
    # has no buttons left to press.
    finished = await eventually(
        lambda: asyncio.to_thread(slack_api.message, channel, ts),
        lambda m: not actions_of(m),
        timeout=30, what="the buttons to go",
    )  # fmt: skip
    shown = text_of(finished)
    assert "*pam* as product-manager approved" in shown
    assert "*lee* as tech-lead approved" in shown
    assert len(slack_api.calls_to("chat.postMessage")) == 1
    # A click on a stale copy of the message (a client not refreshed yet) changes nothing.
    assert (await asyncio.to_thread(click, "nobody", REJECT, seen=updated))[0] == 200
    assert remediation(daemon, rid)["status"] == "succeeded"
    replies = await eventually(
        lambda: asyncio.to_thread(list, slack_api.ephemerals),
        lambda sent: sent[-1]["user"] == "U0NOBODY", timeout=30, what="the reply to nobody",
    )  # fmt: skip
    assert replies[-1]["text"] == f"Nothing was done: id: {rid} is succeeded, not awaiting approval"
    assert daemon.metric('remediator_slack_interactions_total{result="approve"}') == 2
    assert daemon.metric('remediator_slack_interactions_total{result="replayed"}') == 1
