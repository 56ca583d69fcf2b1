"""A stand-in for the Slack Web API (the one peer that is not the real thing).

Slack is a SaaS with no local server, so this aiohttp app speaks the parts of its
HTTP contract remediator uses: ``auth.test``, ``chat.postMessage``, ``chat.update``,
form-encoded or JSON bodies, the token as ``Authorization: Bearer`` or ``token``
argument, HTTP 200 with ``{"ok": false, "error": ...}`` for API errors, and HTTP 429
with ``Retry-After`` when rate limited. It runs in a thread with its own event loop,
records every call (``peer.calls``), and can be told to fail (``fail_next``) or go
away (``set_down``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.env.base import Peer, PeerError, free_port

SLACK_TOKEN = "xoxb-remediator-testenv-token"
TEAM_ID = "T0TESTENV"
USER_ID = "U0TESTENV"
BOT_ID = "B0TESTENV"
APP_ID = "A0TESTENV"
DEFAULT_CHANNELS = ("alerts", "deploys", "general", "remediator")
SIGNING_SECRET = "8f2b0c4e6a1d3f5b7c9e0a2b4d6f8a1c"  # the stand-in app's, not a real one

# Block Kit block types Slack accepts in messages.
BLOCK_TYPES = frozenset(
    {
        "actions",
        "context",
        "divider",
        "file",
        "header",
        "image",
        "input",
        "rich_text",
        "section",
        "video",
        "markdown",
    }
)


@dataclass
class SlackCall:
    method: str
    args: dict[str, Any]
    token: str | None
    http_status: int = 200
    response: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Failure:
    status: int
    retry_after: int | None
    error: str


class SlackPeer(Peer):
    name = "slack"
    version = "stand-in"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.token = SLACK_TOKEN
        self.channels: dict[str, str] = {}  # name -> id
        self.messages: dict[str, dict[str, dict[str, Any]]] = {}  # channel id -> ts -> msg
        self.calls: list[SlackCall] = []
        self.ephemerals: list[dict[str, str]] = []  # chat.postEphemeral: channel, user, text
        self.clicks: list[tuple[str, bytes, dict[str, str]]] = []  # url, body, headers sent
        self.signing_secret = SIGNING_SECRET
        self.port = 0
        self._lock = threading.Lock()
        self._failures: list[_Failure] = []
        self._down_mode: str | None = None
        self._ts = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: Any = None
        self._site: Any = None
        self._log = self.workdir / "slack.log"
        for name in DEFAULT_CHANNELS:
            self.add_channel(name)

    # -- test controls ---------------------------------------------------------------
    def add_channel(self, name: str) -> str:
        """Make a channel exist; returns its id. Unknown channels are channel_not_found."""
        name = name.lstrip("#")
        with self._lock:
            if name not in self.channels:
                self.channels[name] = f"C{len(self.channels) + 1:03d}{name.upper()[:6]}"
                self.messages.setdefault(self.channels[name], {})
            return self.channels[name]

    def fail_next(
        self, n: int = 1, *, status: int = 429, retry_after: int | None = 1, error: str = ""
    ) -> None:
        """The next ``n`` calls fail: 429 + Retry-After (default), or any HTTP status.

        With status 200, ``error`` is returned as an API error (``{"ok": false}``).
        """
        default = {429: "ratelimited", 200: "internal_error"}.get(status, "service_unavailable")
        with self._lock:
            self._failures.extend(_Failure(status, retry_after, error or default) for _ in range(n))

    def set_down(self, down: bool, *, mode: str = "refuse") -> None:
        """``mode="refuse"`` closes the listener (connection refused); ``"503"`` answers 503."""
        if mode not in ("refuse", "503"):
            raise ValueError("mode is 'refuse' or '503'")
        if down and mode == "refuse":
            self._run(self._close_site())
        elif self._site is None:  # up again, or down-but-answering-503
            self._run(self._open_site())
        with self._lock:
            self._down_mode = mode if down else None
        self._note(f"set_down({down}, mode={mode})")

    def reset(self) -> None:
        """Forget calls, messages and pending failures; come back up."""
        self.set_down(False)
        with self._lock:
            self.calls.clear()
            self._failures.clear()
            for msgs in self.messages.values():
                msgs.clear()
            self.ephemerals.clear()
            self.clicks.clear()

    def message(self, channel: str, ts: str) -> dict[str, Any]:
        """A message as it is now (after every chat.update)."""
        channel_id = self._channel_id(channel) or channel
        with self._lock:
            return dict(self.messages[channel_id][ts])

    def click(
        self,
        url: str,
        *,
        channel: str,
        ts: str,
        action_id: str,
        user_id: str,
        user_name: str = "someone",
        secret: str | None = None,
        timestamp: int | None = None,
        seen: dict[str, Any] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """A user clicks the button ``action_id`` of a message: the signed ``block_actions``
        request Slack would post to ``url`` (the app's Request URL). ``secret`` and
        ``timestamp`` default to the app's signing secret and now; tests change them to
        forge or age the request. ``seen`` is an earlier version of the message, as a
        client that has not refreshed yet still shows it."""
        channel_id = self._channel_id(channel) or channel
        message = seen or self.message(channel_id, ts)
        body = interaction_body(click_payload(
            message=message, channel_id=channel_id, action_id=action_id, user_id=user_id,
            user_name=user_name, response_url=f"http://127.0.0.1:{self.port}/actions/1",
        ))  # fmt: skip
        headers = signed_headers(
            body, secret=secret or self.signing_secret,
            timestamp=int(time.time()) if timestamp is None else timestamp,
        )  # fmt: skip
        with self._lock:
            self.clicks.append((url, body, headers))
        return post_interaction(url, body, headers)

    def replay_last_click(self) -> tuple[int, dict[str, Any]]:
        """What an attacker who captured the last request would send: the same bytes."""
        with self._lock:
            url, body, headers = self.clicks[-1]
        return post_interaction(url, body, headers)

    def calls_to(self, method: str) -> list[SlackCall]:
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def wait_for_calls(self, method: str, count: int = 1, timeout: float = 10.0) -> list[SlackCall]:
        deadline = time.monotonic() + timeout
        while True:
            calls = self.calls_to(method)
            if len(calls) >= count:
                return calls
            if time.monotonic() > deadline:
                raise PeerError(f"slack: {len(calls)} of {count} {method} calls after {timeout}s")
            time.sleep(0.05)

    # -- lifecycle -------------------------------------------------------------------
    def start(self, deps: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        self.port = free_port()
        self.ports = [self.port]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="slack-api", daemon=True
        )
        self._thread.start()
        try:
            self._run(self._setup())
        except Exception as exc:
            self.stop()
            raise PeerError(
                f"slack: stand-in did not start on 127.0.0.1:{self.port}: {exc}"
            ) from exc
        self._note(f"listening on 127.0.0.1:{self.port}")
        return {
            "slack_api_url": f"http://127.0.0.1:{self.port}/api/",
            "slack_token": self.token,
            "versions": {"slack": "stand-in"},
        }

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            try:
                if self._runner is not None:
                    self._run(self._runner.cleanup())
                self._run(_cancel_pending())
            except Exception as exc:  # noqa: BLE001 - teardown must go on
                self.progress(f"slack: cleanup failed: {exc}")
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
            self._note("stopped")
        self._loop = self._thread = self._runner = self._site = None
        super().stop()

    def _run(self, coro: Any, timeout: float = 10.0) -> Any:
        if self._loop is None:
            coro.close()
            raise PeerError("slack: not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _setup(self) -> None:
        from aiohttp import web

        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await self._open_site()

    async def _open_site(self) -> None:
        from aiohttp import web

        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await self._site.start()

    async def _close_site(self) -> None:
        if self._site is not None:
            await self._site.stop()
            self._site = None

    # -- the API ---------------------------------------------------------------------
    async def _handle(self, request: Any) -> Any:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            if request.content_type == "application/json":
                try:
                    body = await request.json()
                except ValueError:
                    body = None
                if not isinstance(body, dict):
                    return self._reply(
                        method, args, None, 200, {"ok": False, "error": "invalid_json"}
                    )
                args.update(body)
            else:
                args.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else args.pop("token", None)

        with self._lock:
            down = self._down_mode
            failure = self._failures.pop(0) if self._failures else None
        if down == "503":
            return self._reply(
                method, args, token, 503, {"ok": False, "error": "service_unavailable"}
            )
        if failure is not None:
            headers = {}
            if failure.retry_after is not None:
                headers["Retry-After"] = str(failure.retry_after)
            return self._reply(
                method, args, token, failure.status, {"ok": False, "error": failure.error}, headers
            )
        if not token:
            return self._reply(method, args, token, 200, {"ok": False, "error": "not_authed"})
        if token != self.token:
            return self._reply(method, args, token, 200, {"ok": False, "error": "invalid_auth"})

        handler = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.postEphemeral": self._post_ephemeral,
        }.get(method)
        if handler is None:
            return self._reply(method, args, token, 200, {"ok": False, "error": "unknown_method"})
        return self._reply(method, args, token, 200, handler(args))

    def _reply(
        self,
        method: str,
        args: dict[str, Any],
        token: str | None,
        status: int,
        body: dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> Any:
        from aiohttp import web

        with self._lock:
            self.calls.append(SlackCall(method, args, token, status, body))
        self._note(f"{method} -> {status} {json.dumps(body)[:300]}")
        return web.json_response(body, status=status, headers=headers)

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://remediator-testenv.slack.com/",
            "team": "Remediator Testenv",
            "user": "remediator",
            "team_id": TEAM_ID,
            "user_id": USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _channel_id(self, channel: Any) -> str | None:
        if not isinstance(channel, str) or not channel:
            return None
        with self._lock:
            if channel in self.messages:
                return channel
            return self.channels.get(channel.lstrip("#"))

    def _content(self, args: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """Text, blocks and attachments of a message, or a Slack error code."""
        content: dict[str, Any] = {}
        for key in ("blocks", "attachments"):
            value = args.get(key)
            if isinstance(value, str):  # form-encoded bodies carry JSON as a string
                try:
                    value = json.loads(value)
                except ValueError:
                    return {}, f"invalid_{key}"
            if value is not None:
                content[key] = value
        if "blocks" in content:
            error = _check_blocks(content["blocks"])
            if error:
                return {}, error
        text = args.get("text")
        if text is not None:
            content["text"] = str(text)
        if not content.get("text") and not content.get("blocks") and not content.get("attachments"):
            return {}, "no_text"
        return content, None

    def _post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel_id(args.get("channel"))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        content, error = self._content(args)
        if error:
            return {"ok": False, "error": error}
        ts = f"{int(time.time())}.{next(self._ts):06d}"
        message: dict[str, Any] = {
            "user": USER_ID,
            "type": "message",
            "ts": ts,
            "bot_id": BOT_ID,
            "app_id": APP_ID,
            "text": content.get("text", ""),
            "team": TEAM_ID,
            **{k: v for k, v in content.items() if k != "text"},
        }
        if args.get("thread_ts"):
            message["thread_ts"] = str(args["thread_ts"])
        with self._lock:
            self.messages[channel][ts] = message
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def _update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel_id(args.get("channel"))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        ts = str(args.get("ts", ""))
        with self._lock:
            original = self.messages[channel].get(ts)
        if original is None:
            return {"ok": False, "error": "message_not_found"}
        content, error = self._content(args)
        if error:
            return {"ok": False, "error": error}
        updated = {**original, **content, "edited": {"user": USER_ID, "ts": f"{time.time():.6f}"}}
        with self._lock:
            self.messages[channel][ts] = updated
        message = {
            k: v for k, v in updated.items() if k in ("text", "user", "blocks", "attachments")
        }
        return {
            "ok": True,
            "channel": channel,
            "ts": ts,
            "text": updated["text"],
            "message": message,
        }

    def _post_ephemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel_id(args.get("channel"))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        user = args.get("user")
        if not isinstance(user, str) or not user:
            return {"ok": False, "error": "user_not_in_channel"}
        content, error = self._content(args)
        if error:
            return {"ok": False, "error": error}
        with self._lock:
            self.ephemerals.append(
                {"channel": channel, "user": user, "text": content.get("text", "")}
            )
        return {"ok": True, "message_ts": f"{int(time.time())}.{next(self._ts):06d}"}

    def _note(self, line: str) -> None:
        with self._log.open("a") as fh:
            fh.write(f"{time.strftime('%H:%M:%S')} {line}\n")


async def _cancel_pending() -> None:
    """Finish what the closed server left (e.g. a connection accepted while stopping)."""
    await asyncio.sleep(0)
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _check_blocks(blocks: Any) -> str | None:
    """Enough of Block Kit validation to catch malformed payloads (-> invalid_blocks)."""
    if not isinstance(blocks, list) or len(blocks) > 50:
        return "invalid_blocks"
    for block in blocks:
        if not isinstance(block, dict) or block.get("type") not in BLOCK_TYPES:
            return "invalid_blocks"
        text = block.get("text")
        if text is not None and not (
            isinstance(text, dict)
            and text.get("type") in ("plain_text", "mrkdwn")
            and isinstance(text.get("text"), str)
        ):
            return "invalid_blocks"
        if block["type"] == "section" and text is None and not block.get("fields"):
            return "invalid_blocks"
        if block["type"] == "header" and (
            not isinstance(text, dict) or text.get("type") != "plain_text"
        ):
            return "invalid_blocks"
        if block["type"] == "actions" and not _valid_actions(block):
            return "invalid_blocks"
    return None


def _plain(text: Any, limit: int) -> bool:
    return (
        isinstance(text, dict)
        and text.get("type") == "plain_text"
        and isinstance(text.get("text"), str)
        and 0 < len(text["text"]) <= limit
    )


def _valid_actions(block: dict[str, Any]) -> bool:
    """Buttons as Block Kit documents them: plain_text label of at most 75 characters,
    action_id up to 255 and unique in the message, value up to 2000, style primary or
    danger, and a confirm dialog with its four texts."""
    elements = block.get("elements")
    if not isinstance(elements, list) or not 0 < len(elements) <= 25:
        return False
    if len(str(block.get("block_id", ""))) > 255:
        return False
    ids = [e.get("action_id") for e in elements if isinstance(e, dict)]
    if len(ids) != len(elements) or len(set(ids)) != len(ids):
        return False
    for button in elements:
        if button.get("type") != "button" or not _plain(button.get("text"), 75):
            return False
        if len(str(button.get("action_id"))) > 255 or len(str(button.get("value", ""))) > 2000:
            return False
        if button.get("style") not in (None, "primary", "danger"):
            return False
        confirm = button.get("confirm")
        if confirm is not None and not (
            _plain(confirm.get("title"), 100)
            and isinstance(confirm.get("text"), dict)
            and 0 < len(str(confirm["text"].get("text", ""))) <= 300
            and _plain(confirm.get("confirm"), 30)
            and _plain(confirm.get("deny"), 30)
        ):
            return False
    return True


# -- Slack's side of interactivity ------------------------------------------------------------


def click_payload(
    *,
    message: dict[str, Any],
    channel_id: str,
    action_id: str,
    user_id: str,
    user_name: str = "someone",
    team_id: str = TEAM_ID,
    response_url: str = "https://hooks.slack.com/actions/T0/1/x",
) -> dict[str, Any]:
    """The ``block_actions`` payload Slack sends when ``user_id`` clicks the button
    ``action_id`` of ``message`` (its fields as Slack documents them)."""
    block, button = _button(message, action_id)
    now = f"{time.time():.6f}"
    return {
        "type": "block_actions",
        "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": team_id},
        "api_app_id": APP_ID,
        "token": "deprecated-verification-token",
        "container": {"type": "message", "message_ts": message["ts"], "channel_id": channel_id,
                      "is_ephemeral": False},
        "trigger_id": f"{int(time.time())}.{team_id}.{hashlib.sha256(now.encode()).hexdigest()[:32]}",
        "team": {"id": team_id, "domain": "remediator-testenv"},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel_id, "name": "alerts"},
        "message": message,
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [{
            "action_id": action_id, "block_id": block.get("block_id", "b"),
            "text": button.get("text"), "value": button.get("value"),
            "style": button.get("style"), "type": "button", "action_ts": now,
        }],
    }  # fmt: skip


def _button(message: dict[str, Any], action_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    for block in message.get("blocks") or ():
        for element in block.get("elements") or () if block.get("type") == "actions" else ():
            if element.get("type") == "button" and element.get("action_id") == action_id:
                return block, element
    raise PeerError(f"slack: the message {message.get('ts')} has no button {action_id!r}")


def interaction_body(payload: dict[str, Any]) -> bytes:
    """How Slack posts an interaction: a form with one field, ``payload``, of JSON."""
    return urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()


def signed_headers(body: bytes, *, secret: str, timestamp: int) -> dict[str, str]:
    """Slack's v0 request signature over ``v0:<timestamp>:<body>``."""
    base = f"v0:{timestamp}:".encode() + body
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": str(timestamp),
        "X-Slack-Signature": f"v0={digest}",
    }


def post_interaction(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
