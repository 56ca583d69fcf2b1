"""``POST /api/v1/slack/interactions``: the Approve and Reject buttons of Slack messages.

Slack cannot send our bearer tokens; what it sends is a signature over the request,
made with the app's signing secret (domain/slack_interactions.py). A request is taken
only when that signature matches, its timestamp is within five minutes of our clock,
and the same signature was not seen before in that window; anything else is a 401
that approves nothing (and counts against the address like a wrong token).

Who clicked is the Slack user id of the signed payload, mapped to a principal by the
principals file (``slack_users``); nothing else of the payload names anyone. The
click is then an approval or a rejection by that principal, under exactly the rules of
the API (ApprovalApi.vote). The clicker is told what happened in a message only they
see; the remediation's own message is updated in place by the notification relay,
from the journal, like every other change.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime

import orjson
from aiohttp import web
from pydantic import SecretStr

from remediator.domain.approvals import Verdict
from remediator.domain.auth import Principal, Role, forbidden
from remediator.domain.errors import InvalidInput, RemediatorError, TemporaryError
from remediator.domain.slack_interactions import (
    SIGNATURE_HEADER,
    SIGNATURE_WINDOW_SECONDS,
    TIMESTAMP_HEADER,
    SignatureCheck,
    SlackAction,
    SlackClick,
    check_signature,
    parse_click,
)
from remediator.ingress.answers import error_response, json_response
from remediator.ingress.approvals import ApprovalApi
from remediator.ingress.auth import Authenticator, FailedAuthLimiter
from remediator.metrics import Metrics
from remediator.ports import SlackReplies

log = logging.getLogger(__name__)

PATH = "/api/v1/slack/interactions"
# Replies still being sent; past this, further replies are dropped (and logged): a click
# storm must not grow tasks without bound.
MAX_PENDING_REPLIES = 100
REPLY_TIMEOUT_SECONDS = 10.0
MAX_REMEMBERED_SIGNATURES = 100_000
_VERDICTS = {SlackAction.APPROVE: Verdict.APPROVE, SlackAction.REJECT: Verdict.REJECT}
_SIGNATURE_PROBLEMS = {
    SignatureCheck.MISSING: f"{TIMESTAMP_HEADER} and {SIGNATURE_HEADER} are required",
    SignatureCheck.MALFORMED: f"{SIGNATURE_HEADER}: not v0=<64 hex digits>, or "
    f"{TIMESTAMP_HEADER} not seconds since the epoch",
    SignatureCheck.STALE: f"{TIMESTAMP_HEADER}: more than {SIGNATURE_WINDOW_SECONDS} s "
    "from this server's clock",
    SignatureCheck.MISMATCH: f"{SIGNATURE_HEADER}: does not match the body (wrong signing "
    "secret, or the body was changed)",
}


class SeenSignatures:
    """Signatures taken within the window: the same signed request twice is a replay.

    Per process: a replay sent to another replica is caught by the approval rules
    instead (a principal counts once), so it still changes nothing.
    """

    def __init__(self, *, window: float, limit: int = MAX_REMEMBERED_SIGNATURES) -> None:
        self._window = window
        self._limit = limit
        self._seen: OrderedDict[str, float] = OrderedDict()

    def first_time(self, signature: str, *, now: float) -> bool:
        while self._seen:
            oldest, at = next(iter(self._seen.items()))
            if at > now - 2 * self._window and len(self._seen) < self._limit:
                break
            del self._seen[oldest]
        if signature in self._seen:
            return False
        self._seen[signature] = now
        return True


class SlackInteractions:
    def __init__(
        self,
        *,
        signing_secret: SecretStr,
        auth: Authenticator,
        approvals: ApprovalApi,
        replies: SlackReplies | None,
        metrics: Metrics,
        team_id: str | None = None,
        failed_auth: FailedAuthLimiter | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        window: float = SIGNATURE_WINDOW_SECONDS,
    ) -> None:
        self._secret = signing_secret
        self._auth = auth
        self._approvals = approvals
        self._replies = replies
        self._metrics = metrics
        self._team_id = team_id
        self._failed_auth = failed_auth
        self._clock = clock
        self._window = window
        self._seen = SeenSignatures(window=window)
        self._pending: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"SlackInteractions(team_id={self._team_id!r})"  # never the secret

    async def handle(self, request: web.Request) -> web.Response:
        client = request.remote or "unknown"
        if self._failed_auth is not None:
            wait = self._failed_auth.retry_after(client)
            if wait is not None:
                self._metrics.auth_throttled.inc()
                return error_response(
                    429, f"too many failed authentications from {client}: retry in {wait}s",
                    headers={"Retry-After": str(wait)},
                )  # fmt: skip
        body = await request.read()
        now = self._clock().timestamp()
        signature = request.headers.get(SIGNATURE_HEADER)
        check = check_signature(
            secret=self._secret.get_secret_value().encode(),
            timestamp=request.headers.get(TIMESTAMP_HEADER),
            signature=signature,
            body=body,
            now=now,
            window=self._window,
        )
        if check is not SignatureCheck.VALID:
            return self._unauthenticated(client, check.value, _SIGNATURE_PROBLEMS[check])
        assert signature is not None
        if not self._seen.first_time(signature, now=now):
            return self._unauthenticated(
                client, "replayed", f"{SIGNATURE_HEADER}: already used (a replayed request)"
            )
        click = _click(request.content_type, body)
        if click is None:  # another button: not ours to act on
            self._count("ignored")
            return json_response({"ok": True})
        return await self._act(click)

    async def _act(self, click: SlackClick) -> web.Response:
        if self._team_id is not None and click.team_id != self._team_id:
            self._count("other_team")
            return error_response(
                403, f"team.id: clicks are taken from workspace {self._team_id} only"
            )
        principal = self._auth.slack_principal(click.user_id)
        if principal is None:
            self._count("unmapped")
            log.warning("Slack user %s (%s) clicked %s on %s: not mapped to a principal",
                        click.user_id, click.user_name or "?", click.action.value,
                        click.remediation_id)  # fmt: skip
            self._reply(click, (
                f"Nothing was done: your Slack user ({click.user_id}) is not mapped to a "
                "remediator principal. Ask an admin to add it to `slack_users` of that "
                "principal in the principals file."
            ))  # fmt: skip
            return json_response({"ok": True})
        if not principal.holds(Role.OPERATE):
            self._count("forbidden")
            self._reply(click, f"Nothing was done: {forbidden(principal, Role.OPERATE)}.")
            return json_response({"ok": True})
        return await self._vote(click, principal)

    async def _vote(self, click: SlackClick, principal: Principal) -> web.Response:
        verdict = _VERDICTS[click.action]
        try:
            answer = await self._approvals.vote(
                click.remediation_id, principal, verdict, via=f"Slack (user {click.user_id})"
            )
        except TemporaryError as exc:
            self._count("unavailable")
            self._reply(click, "Nothing was done: the journal is unavailable; try again.")
            return error_response(503, f"journal unavailable: {exc}")
        if answer.refusal is not None:
            self._count("refused")
            self._reply(click, f"Nothing was done: {answer.refusal.message}")
            return json_response({"ok": True})
        self._count(verdict.value)
        after = answer.remediation
        assert after is not None
        self._reply(click, _confirmation(verdict, principal, after.id, after.status.value))
        return json_response({"ok": True})

    def _unauthenticated(self, client: str, result: str, message: str) -> web.Response:
        self._count(result)
        self._metrics.auth_failures.labels(reason="slack_signature").inc()
        if self._failed_auth is not None:
            self._failed_auth.failed(client)
        return error_response(401, message)

    def _count(self, result: str) -> None:
        self._metrics.slack_interactions.labels(result=result).inc()

    # -- replies only the clicker sees -----------------------------------------------------
    def _reply(self, click: SlackClick, text: str) -> None:
        """Sent in the background: Slack wants the answer to a click within 3 s."""
        if self._replies is None or click.channel_id is None:
            return
        if len(self._pending) >= MAX_PENDING_REPLIES:
            log.warning("Slack reply to %s dropped: %d replies still pending", click.user_id,
                        len(self._pending))  # fmt: skip
            return
        task = asyncio.create_task(self._send(click.channel_id, click.user_id, text))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _send(self, channel: str, user: str, text: str) -> None:
        assert self._replies is not None
        try:
            async with asyncio.timeout(REPLY_TIMEOUT_SECONDS):
                await self._replies.ephemeral(channel=channel, user=user, text=text)
        except (RemediatorError, TimeoutError) as exc:
            log.warning("Slack reply to %s in %s not sent: %s", user, channel, exc)

    async def drain(self) -> None:
        """Replies still pending (the listener stops) are given a moment, then dropped."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=1.0)
        for task in set(self._pending):
            task.cancel()
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)


def _click(content_type: str, body: bytes) -> SlackClick | None:
    """The click in Slack's form-encoded body (one ``payload`` field of JSON)."""
    if content_type != "application/x-www-form-urlencoded":
        raise InvalidInput(
            f"expected application/x-www-form-urlencoded, got {content_type or 'none'}",
            where="Content-Type",
        )
    try:
        fields = urllib.parse.parse_qs(
            body.decode("utf-8"), strict_parsing=True, max_num_fields=20, errors="strict"
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput(f"not a form body ({type(exc).__name__})", where="body") from None
    payloads = fields.get("payload") or []
    if len(payloads) != 1:
        raise InvalidInput(f"expected one payload field, got {len(payloads)}", where="payload")
    try:
        document = orjson.loads(payloads[0])
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"not valid JSON ({exc})", where="payload") from None
    return parse_click(document)


def _confirmation(verdict: Verdict, principal: Principal, rid: str, status: str) -> str:
    did = "approved" if verdict is Verdict.APPROVE else "rejected"
    return f"You {did} {rid} as {principal.name}; it is now {status.replace('_', ' ')}."
