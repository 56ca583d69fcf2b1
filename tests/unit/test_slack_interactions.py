"""Slack's Approve and Reject buttons: the request signature, the click, and the endpoint
(with the real SQLite journal, the shipped rule pack and the real decision engine).

Clicks are built and signed by the Slack stand-in's own helpers (tests/env/slack.py), the
same ones the end-to-end test posts through; replies go to a recording SlackReplies port.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from remediator.domain.approvals import ApprovalConfig
from remediator.domain.auth import Principal, Role
from remediator.domain.errors import InvalidInput
from remediator.domain.lifecycle import RemediationStatus
from remediator.domain.rules import RulePack, signal_from_cloudevent
from remediator.domain.slack_interactions import (
    SignatureCheck,
    SlackAction,
    check_signature,
    parse_click,
    sign,
)
from remediator.engine.decider import DecisionEngine
from remediator.ingress.auth import Authenticator, PrincipalCredentials, load_principals
from remediator.ingress.http import IntakeApp, IntakeState
from remediator.ingress.slack import SeenSignatures
from remediator.journal.sqlite import SqliteJournal
from remediator.metrics import Metrics
from remediator.rulefiles import load_rule_pack_from_path
from tests.env.slack import TEAM_ID, click_payload, interaction_body, signed_headers
from tests.unit.auth_helpers import bearer, principal
from tests.unit.journal_helpers import outbox_messages
from tests.unit.test_rollback_requests_api import _NoFacts, deploy, token

RULES = Path(__file__).resolve().parents[2] / "rules"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
SECRET = "slack-signing-secret-0123456789abcdef"
PATH = "/api/v1/slack/interactions"
# name -> (approver roles, Slack user, API roles)
PEOPLE: dict[str, tuple[tuple[str, ...], str, tuple[Role, ...]]] = {
    "rita": (("tech-lead",), "U0RITA", (Role.READ, Role.OPERATE)),  # asks
    "pam": (("product-manager",), "U0PAM", (Role.READ, Role.OPERATE)),
    "lee": (("tech-lead",), "U0LEE", (Role.READ, Role.OPERATE)),
    "nobody": ((), "U0NOBODY", (Role.READ, Role.OPERATE)),
    "viewer": (("tech-lead",), "U0VIEWER", (Role.READ,)),  # may not operate
}


def people() -> list[PrincipalCredentials]:
    return [
        principal(name, *roles, token=token(name), approver_roles=approver,
                  slack_users=[slack_user])
        for name, (approver, slack_user, roles) in PEOPLE.items()
    ]  # fmt: skip


@dataclass
class Replies:
    """The SlackReplies port, recording (our own port: faking it is fair)."""

    sent: list[dict[str, str]] = field(default_factory=list)

    async def ephemeral(self, *, channel: str, user: str, text: str) -> None:
        self.sent.append({"channel": channel, "user": user, "text": text})


@dataclass
class World:
    client: TestClient
    journal: SqliteJournal
    intake: IntakeApp
    clock: list[datetime]
    replies: Replies
    deciding: list[asyncio.Task[int]] = field(default_factory=list)

    async def request(self) -> str:
        resp = await self.client.post(
            "/api/v1/rollback-requests", headers=bearer(token("rita")),
            data=orjson.dumps({"service": "checkout", "scenario": "severe_functional_defect",
                               "reason": "card payments fail"}),
        )  # fmt: skip
        item = orjson.loads(await resp.read())
        assert resp.status == 201, item
        return str(item["id"])

    def body(self, rid: str, who: str, action: SlackAction, **kw: Any) -> bytes:
        message = {"ts": "1700000000.000100", "type": "message", "blocks": [
            {"type": "actions", "block_id": "remediator.approval", "elements": [
                {"type": "button", "action_id": a.value, "value": rid,
                 "text": {"type": "plain_text", "text": a.name}}
                for a in SlackAction
            ]},
        ]}  # fmt: skip
        payload = click_payload(message=message, channel_id="C001ALERTS", action_id=action.value,
                                user_id=PEOPLE[who][1] if who in PEOPLE else who,
                                user_name=who, **kw)  # fmt: skip
        return interaction_body(payload)

    async def post(
        self, body: bytes, *, secret: str = SECRET, age: float = 0.0, **headers: str
    ) -> tuple[int, Any]:
        sent = {**signed_headers(body, secret=secret,
                                 timestamp=int(self.clock[0].timestamp() - age)), **headers}  # fmt: skip
        resp = await self.client.post(PATH, data=body, headers=sent)
        answer = orjson.loads(await resp.read())
        assert self.intake.slack is not None
        await self.intake.slack.drain()  # the replies, sent in the background
        return resp.status, answer

    async def click(self, rid: str, who: str, action: SlackAction, **kw: Any) -> tuple[int, Any]:
        return await self.post(self.body(rid, who, action), **kw)

    async def item(self, rid: str) -> Any:
        found = await self.journal.get_remediation(rid)
        assert found is not None
        return found


@pytest.fixture(scope="module")
def pack() -> RulePack:
    return load_rule_pack_from_path(RULES)


async def open_world(tmp_path: Path, pack: RulePack, **slack: Any) -> tuple[World, DecisionEngine]:
    journal = SqliteJournal(path=tmp_path / "journal.db")
    await journal.open()
    await journal.record_signals([
        signal_from_cloudevent(deploy(n, NOW - timedelta(days=3 - n)), received_at=NOW)
        for n in (1, 2, 3)
    ])  # fmt: skip
    clock = [NOW]
    engine = DecisionEngine(journal=journal, pack=pack, facts=_NoFacts(), dry_run=False,
                            clock=lambda: clock[0], approvals=ApprovalConfig())  # fmt: skip
    replies = Replies()
    intake = IntakeApp(
        journal=journal, metrics=Metrics(), auth=Authenticator(principals=people()),
        state=IntakeState(), service_labels=("service",), namespace_labels=("namespace",),
        body_limit_bytes=1024 * 1024, retry_after_seconds=1, clock=lambda: clock[0], pack=pack,
        notice_channels=("slack",), slack_replies=replies,
        **({"slack_signing_secret": SecretStr(SECRET)} | slack),
    )  # fmt: skip
    client = TestClient(TestServer(intake.build()))
    await client.start_server()
    world = World(client, journal, intake, clock, replies)
    intake.on_new_signals = lambda stored: world.deciding.append(
        asyncio.create_task(engine.run_once())
    )
    return world, engine


@pytest.fixture
async def world(tmp_path: Path, pack: RulePack) -> AsyncIterator[World]:
    opened, _ = await open_world(tmp_path, pack)
    yield opened
    await asyncio.gather(*opened.deciding)
    await opened.client.close()
    await opened.journal.close()


def counted(world: World, result: str) -> float:
    value = world.intake.metrics.registry.get_sample_value(
        "remediator_slack_interactions_total", {"result": result}
    )
    return value or 0.0


# -- the signature ---------------------------------------------------------------------


def test_slacks_documented_example_signature() -> None:
    # The worked example of Slack's "Verifying requests from Slack" guide.
    body = (
        b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&"
        b"channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&"
        b"command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2F"
        b"commands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&"
        b"trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
    )
    signature = sign(secret=b"8f742231b10e8888abcd99yyyzzz85a5", timestamp="1531420618",
                     body=body)  # fmt: skip
    assert signature == "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({}, SignatureCheck.VALID),
        ({"secret": b"another app's secret"}, SignatureCheck.MISMATCH),
        ({"body": b"payload=%7B%22tampered%22%3A1%7D"}, SignatureCheck.MISMATCH),
        ({"now": 1_800_000_000 + 301}, SignatureCheck.STALE),
        ({"now": 1_800_000_000 - 301}, SignatureCheck.STALE),  # from the future
        ({"now": 1_800_000_000 + 300}, SignatureCheck.VALID),  # the window's edge
        ({"timestamp": None}, SignatureCheck.MISSING),
        ({"signature": ""}, SignatureCheck.MISSING),
        ({"timestamp": "1.8e9"}, SignatureCheck.MALFORMED),
        ({"signature": "v1=" + "0" * 64}, SignatureCheck.MALFORMED),
        ({"signature": "v0=" + "A" * 64}, SignatureCheck.MALFORMED),
    ],
)
def test_a_signature_is_valid_only_for_its_secret_body_and_time(
    change: dict[str, Any], expected: SignatureCheck
) -> None:
    body = b"payload=%7B%7D"
    signed = sign(secret=b"secret", timestamp="1800000000", body=body)
    args: dict[str, Any] = {"secret": b"secret", "timestamp": "1800000000",
                            "signature": signed, "body": body, "now": 1_800_000_000}  # fmt: skip
    assert check_signature(**(args | change)) is expected


def test_a_signature_is_taken_once_within_the_window() -> None:
    seen = SeenSignatures(window=300)
    assert seen.first_time("v0=a", now=1000)
    assert not seen.first_time("v0=a", now=1200)  # a replay
    assert seen.first_time("v0=b", now=1200)
    # Forgotten only once no request with it could pass the timestamp check any more.
    assert seen.first_time("v0=a", now=1000 + 601)


def test_remembered_signatures_are_bounded() -> None:
    seen = SeenSignatures(window=300, limit=3)
    for n in range(10):
        assert seen.first_time(f"v0={n}", now=1000)
    assert len(seen._seen) <= 3


# -- the click -------------------------------------------------------------------------


def payload(**change: Any) -> dict[str, Any]:
    message = {"ts": "1.2", "blocks": [{"type": "actions", "block_id": "x", "elements": [
        {"type": "button", "action_id": "remediator.approve", "value": "rem-1"}]}]}  # fmt: skip
    return click_payload(message=message, channel_id="C001", action_id="remediator.approve",
                         user_id="U0LEE", user_name="lee") | change  # fmt: skip


def test_a_click_names_its_user_team_action_and_remediation() -> None:
    click = parse_click(payload())
    assert click is not None
    assert (click.user_id, click.user_name, click.team_id) == ("U0LEE", "lee", TEAM_ID)
    assert (click.action, click.remediation_id) == (SlackAction.APPROVE, "rem-1")
    assert (click.channel_id, click.message_ts) == ("C001", "1.2")


def test_another_apps_button_is_not_a_click_of_ours() -> None:
    document = payload()
    document["actions"][0]["action_id"] = "someone.elses"
    assert parse_click(document) is None


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"type": "view_submission"}, "type"),
        ({"actions": []}, "actions"),
        ({"actions": ["x"]}, "actions[0]"),
        ({"user": {"id": "not-a-user"}}, "user.id"),
        ({"user": None}, "user"),
        ({"team": {"id": 7}}, "team.id"),
        ({"container": {"channel_id": "C001", "message_ts": "yesterday"}}, "container.message_ts"),
    ],
)
def test_a_malformed_click_names_the_field(change: dict[str, Any], where: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_click(payload(**change))
    assert caught.value.where == where


def test_a_click_without_a_remediation_id_names_the_value() -> None:
    document = payload()
    document["actions"][0]["value"] = "x" * 300
    with pytest.raises(InvalidInput) as caught:
        parse_click(document)
    assert caught.value.where == "actions[0].value"


# -- the endpoint ----------------------------------------------------------------------


async def test_two_signed_clicks_by_the_right_people_approve_and_the_message_is_updated(
    world: World,
) -> None:
    rid = await world.request()
    status, answer = await world.click(rid, "pam", SlackAction.APPROVE)
    assert (status, answer) == (200, {"ok": True})
    item = await world.item(rid)
    assert item.status is RemediationStatus.AWAITING_APPROVAL
    assert [v.principal for v in item.approval.votes] == ["pam"]
    # The remediation's message is updated in place (the relay renders it from the journal).
    voted = [p.message.id for p in await outbox_messages(world.journal, "slack")
             if ":voted" in p.message.id]  # fmt: skip
    assert voted == [f"slack:{rid}:voted:pam"]
    status, _ = await world.click(rid, "lee", SlackAction.APPROVE)
    assert status == 200
    item = await world.item(rid)
    assert item.status is RemediationStatus.PLANNED  # approved: the executor may take it
    assert sorted((v.principal, v.roles) for v in item.approval.votes) == [
        ("lee", ("tech-lead",)), ("pam", ("product-manager",)),
    ]  # fmt: skip
    # Each clicker is told, in a message only they see, in the channel they clicked in.
    assert world.replies.sent == [
        {"channel": "C001ALERTS", "user": "U0PAM",
         "text": f"You approved {rid} as pam; it is now awaiting approval."},
        {"channel": "C001ALERTS", "user": "U0LEE",
         "text": f"You approved {rid} as lee; it is now planned."},
    ]  # fmt: skip
    assert counted(world, "approve") == 2


async def test_a_reject_click_ends_the_plan_rejected(world: World) -> None:
    rid = await world.request()
    status, _ = await world.click(rid, "lee", SlackAction.REJECT)
    assert status == 200
    assert (await world.item(rid)).status is RemediationStatus.REJECTED
    assert world.replies.sent[-1]["text"] == f"You rejected {rid} as lee; it is now rejected."


@pytest.mark.parametrize(
    ("forgery", "result"),
    [
        ({"secret": "a guess at the signing secret"}, "mismatch"),
        ({"age": 301}, "stale"),  # captured, replayed after the window
        ({"age": -301}, "stale"),
        ({"X-Slack-Signature": "v0=" + "0" * 64}, "mismatch"),
        ({"X-Slack-Signature": "sha256=abc"}, "malformed"),
    ],
)
async def test_a_forged_or_expired_signature_is_refused_and_approves_nothing(
    world: World, forgery: dict[str, Any], result: str
) -> None:
    rid = await world.request()
    status, answer = await world.click(rid, "lee", SlackAction.APPROVE, **forgery)
    assert status == 401
    assert answer["error"].startswith(("X-Slack-Signature: ", "X-Slack-Request-Timestamp: "))
    item = await world.item(rid)
    assert (item.status, item.approval.votes) == (RemediationStatus.AWAITING_APPROVAL, ())
    assert world.replies.sent == []
    assert counted(world, result) == 1


async def test_an_unsigned_click_is_refused(world: World) -> None:
    rid = await world.request()
    resp = await world.client.post(
        PATH,
        data=world.body(rid, "lee", SlackAction.APPROVE),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status == 401
    assert "are required" in orjson.loads(await resp.read())["error"]
    assert (await world.item(rid)).approval.votes == ()


async def test_a_replayed_click_is_refused(world: World) -> None:
    rid = await world.request()
    body = world.body(rid, "pam", SlackAction.APPROVE)
    assert (await world.post(body))[0] == 200
    status, answer = await world.post(body)  # the very same signed request, again
    assert status == 401
    assert answer["error"] == "X-Slack-Signature: already used (a replayed request)"
    assert [v.principal for v in (await world.item(rid)).approval.votes] == ["pam"]
    assert counted(world, "replayed") == 1


async def test_a_signed_click_with_a_changed_user_does_not_verify(world: World) -> None:
    """The user is inside the signed body: swapping it breaks the signature."""
    rid = await world.request()
    body = world.body(rid, "pam", SlackAction.APPROVE)
    headers = signed_headers(body, secret=SECRET, timestamp=int(NOW.timestamp()))
    swapped = body.replace(b"U0PAM", b"U0LEE")
    resp = await world.client.post(PATH, data=swapped, headers=headers)
    assert resp.status == 401
    assert (await world.item(rid)).approval.votes == ()


@pytest.mark.parametrize(
    ("who", "told"),
    [
        ("rita", "someone else must approve it (four eyes)"),
        ("nobody", "forbidden: approving needs one of the approver roles"),
        ("viewer", "forbidden: role 'operate' required (principal 'viewer' has: read)"),
        ("U0STRANGER", "your Slack user (U0STRANGER) is not mapped to a remediator principal"),
    ],
)
async def test_the_api_rules_apply_to_clicks_and_the_clicker_is_told_why_not(
    world: World, who: str, told: str
) -> None:
    rid = await world.request()
    status, _ = await world.click(rid, who, SlackAction.APPROVE)
    assert status == 200  # Slack shows an error icon for anything else; the reason is told
    [reply] = world.replies.sent
    assert reply["text"].startswith("Nothing was done: ") and told in reply["text"], reply
    item = await world.item(rid)
    assert (item.status, item.approval.votes) == (RemediationStatus.AWAITING_APPROVAL, ())


async def test_the_same_person_clicking_twice_counts_once(world: World) -> None:
    rid = await world.request()
    await world.click(rid, "pam", SlackAction.APPROVE)
    await world.click(rid, "pam", SlackAction.APPROVE)  # a new click: a new signature
    assert [v.principal for v in (await world.item(rid)).approval.votes] == ["pam"]
    assert "a principal counts once" in world.replies.sent[-1]["text"]


async def test_a_click_after_expiry_runs_nothing(world: World) -> None:
    rid = await world.request()
    world.clock[0] = NOW + timedelta(hours=3)  # past the 2 h expiry (30 min x 4)
    await world.click(rid, "pam", SlackAction.APPROVE)
    await world.click(rid, "lee", SlackAction.APPROVE)
    item = await world.item(rid)
    assert item.status is RemediationStatus.EXPIRED
    assert "expired" in world.replies.sent[-1]["text"]


async def test_a_click_from_another_workspace_is_refused(tmp_path: Path, pack: RulePack) -> None:
    world, _ = await open_world(tmp_path, pack, slack_team_id="T0OTHER")
    try:
        rid = await world.request()
        status, answer = await world.click(rid, "lee", SlackAction.APPROVE)
        assert (status, answer["error"]) == (
            403, "team.id: clicks are taken from workspace T0OTHER only",
        )  # fmt: skip
        assert (await world.item(rid)).approval.votes == ()
    finally:
        await asyncio.gather(*world.deciding)
        await world.client.close()
        await world.journal.close()


async def test_without_a_signing_secret_the_endpoint_says_it_is_off(
    tmp_path: Path, pack: RulePack
) -> None:
    world, _ = await open_world(tmp_path, pack, slack_signing_secret=None)
    try:
        resp = await world.client.post(PATH, data=b"payload=%7B%7D")
        assert resp.status == 404
        assert "set slack.signing_secret" in orjson.loads(await resp.read())["error"]
    finally:
        await world.client.close()
        await world.journal.close()


@pytest.mark.parametrize(
    ("body", "content_type", "where"),
    [
        (b'{"payload": {}}', "application/json", "Content-Type: "),
        (b"payload=not-json", "application/x-www-form-urlencoded", "payload: not valid JSON"),
        (b"other=1", "application/x-www-form-urlencoded", "payload: expected one payload"),
        (b"payload=%5B%5D", "application/x-www-form-urlencoded", "payload: expected a JSON"),
        (b"payload=%FF", "application/x-www-form-urlencoded", "body: not a form body"),
    ],
)
async def test_a_signed_but_malformed_body_is_a_400_naming_the_field(
    world: World, body: bytes, content_type: str, where: str
) -> None:
    status, answer = await world.post(body, **{"Content-Type": content_type})
    assert status == 400
    assert answer["error"].startswith(where), answer


async def test_another_apps_button_is_taken_and_ignored(world: World) -> None:
    document = payload()
    document["actions"][0]["action_id"] = "someone.elses"
    status, answer = await world.post(interaction_body(document))
    assert (status, answer) == (200, {"ok": True})
    assert counted(world, "ignored") == 1


async def test_repeated_bad_signatures_from_one_address_are_throttled(
    tmp_path: Path, pack: RulePack
) -> None:
    from remediator.ingress.auth import FailedAuthLimiter

    world, _ = await open_world(
        tmp_path,
        pack,
        failed_auth=FailedAuthLimiter(max_failures=2, window_seconds=60, max_clients=10),
    )
    try:
        body = b"payload=%7B%7D"
        codes = [(await world.post(body, secret="guess"))[0] for _ in range(3)]
        assert codes == [401, 401, 429]
    finally:
        await world.client.close()
        await world.journal.close()


def test_principals_file_maps_slack_users_and_refuses_one_user_for_two(tmp_path: Path) -> None:
    from remediator.domain.errors import ConfigError

    path = tmp_path / "principals.yaml"
    path.write_text(
        "principals:\n"
        "  - {name: lee, roles: [operate], approver_roles: [tech-lead], slack_users: [U0LEE]}\n"
    )
    [lee] = load_principals(path)
    auth = Authenticator(principals=[lee])
    found = auth.slack_principal("U0LEE")
    assert isinstance(found, Principal) and found.name == "lee"
    assert auth.slack_principal("U0OTHER") is None
    path.write_text(
        "principals:\n"
        "  - {name: lee, roles: [operate], slack_users: [U0LEE]}\n"
        "  - {name: pam, roles: [operate], slack_users: [U0LEE]}\n"
    )
    with pytest.raises(ConfigError, match="has a Slack user that principals"):
        load_principals(path)
    path.write_text("principals:\n  - {name: lee, roles: [operate], slack_users: [lee]}\n")
    with pytest.raises(ConfigError, match="slack_users"):
        load_principals(path)
