"""Vendor errors map to TemporaryError / PermanentError (no network needed)."""

from __future__ import annotations

import ssl
from typing import Any

import aiohttp
import aiosmtplib
import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from pydantic import SecretStr
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from remediator.connectors import email as email_connector
from remediator.connectors import slack as slack_connector
from remediator.connectors.email import EmailNotifier
from remediator.connectors.slack import SlackNotifier, SlackRejected
from remediator.domain.errors import ConfigError, PermanentError, TemporaryError
from remediator.domain.notices import SlackMessageRef


def api_error(status: int, body: Any, headers: dict[str, str] | None = None) -> SlackApiError:
    response = AsyncSlackResponse(
        client=None,
        http_verb="POST",
        api_url="http://slack.test/api/chat.postMessage",
        req_args={},
        data=body,
        headers=CIMultiDictProxy(CIMultiDict(headers or {})),  # type: ignore[arg-type]
        status_code=status,
    )
    return SlackApiError("failed", response)  # type: ignore[no-untyped-call]


@pytest.mark.parametrize(
    ("error", "kind", "delay"),
    [
        (api_error(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "7"}), "t", 7.0),
        (api_error(429, {"ok": False}, {"retry-after": "soon"}), "t", 5.0),
        (api_error(200, {"ok": False, "error": "ratelimited"}), "t", 5.0),
        (api_error(503, {"ok": False, "error": "service_unavailable"}), "t", 5.0),
        (api_error(502, {}), "t", 5.0),  # an HTML error page: slack_sdk keeps no body
        (api_error(200, {"ok": False, "error": "internal_error"}), "t", 5.0),
        (api_error(200, {"ok": False}), "t", 5.0),
        (api_error(200, {"ok": False, "error": "invalid_auth"}), "p", None),
        (api_error(200, {"ok": False, "error": "channel_not_found"}), "p", None),
        (api_error(200, {"ok": False, "error": "invalid_blocks"}), "p", None),
        (api_error(200, {"ok": False, "error": "token_revoked"}), "p", None),
        (aiohttp.ClientConnectionError("refused"), "t", 5.0),
        (aiohttp.ServerDisconnectedError(), "t", 5.0),
        (TimeoutError(), "t", 5.0),
        (SlackRequestError("bad args"), "p", None),
        (ValueError("surprise"), "t", 5.0),
    ],
)
def test_slack_error_mapping(error: Exception, kind: str, delay: float | None) -> None:
    mapped = slack_connector._map_error(error, method="chat.postMessage")
    if kind == "t":
        assert isinstance(mapped, TemporaryError)
        assert mapped.delay == delay
    else:
        assert isinstance(mapped, PermanentError)
    assert "chat.postMessage" in str(mapped)


def test_slack_rejection_keeps_the_code() -> None:
    error = api_error(200, {"ok": False, "error": "is_archived"})
    mapped = slack_connector._map_error(error, method="chat.update")
    assert isinstance(mapped, SlackRejected)
    assert mapped.code == "is_archived"


def _recipient(code: int) -> aiosmtplib.SMTPRecipientRefused:
    return aiosmtplib.SMTPRecipientRefused(code, "no", "a@example.test")


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (aiosmtplib.SMTPAuthenticationError(535, "bad credentials"), "p"),
        (aiosmtplib.SMTPAuthenticationError(454, "try later"), "t"),
        (aiosmtplib.SMTPSenderRefused(550, "no", "x@example.test"), "p"),
        (aiosmtplib.SMTPDataError(451, "local error"), "t"),
        (aiosmtplib.SMTPRecipientsRefused([_recipient(550), _recipient(553)]), "p"),
        (aiosmtplib.SMTPRecipientsRefused([_recipient(550), _recipient(450)]), "t"),
        (aiosmtplib.SMTPConnectError("refused"), "t"),
        (aiosmtplib.SMTPTimeoutError("slow"), "t"),
        (aiosmtplib.SMTPServerDisconnected("gone"), "t"),
        (aiosmtplib.SMTPNotSupported("SMTPUTF8 is not supported by this server"), "p"),
        (aiosmtplib.SMTPException("SMTP STARTTLS extension not supported by server."), "p"),
        (ConnectionRefusedError(), "t"),
        (ssl.SSLCertVerificationError("self-signed"), "p"),
    ],
)
def test_email_error_mapping(error: Exception, kind: str) -> None:
    mapped = email_connector._map_error(error)
    assert isinstance(mapped, TemporaryError if kind == "t" else PermanentError)


def test_email_configuration_is_checked() -> None:
    with pytest.raises(ConfigError):
        EmailNotifier(host="h", port=25, sender="s@x", security="ssl")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        EmailNotifier(host="h", port=25, sender="s@x", security="none", username="u")
    with pytest.raises(ConfigError):
        EmailNotifier(host="h", port=25, sender="s@x", security="none", password=SecretStr("p"))


async def test_email_without_recipients_is_permanent() -> None:
    notifier = EmailNotifier(host="h", port=25, sender="s@x", security="none")
    with pytest.raises(PermanentError):
        await notifier.send(to=[], subject="s", text="t", html="h")


class FakeClient:
    """Stands in for AsyncWebClient: records calls, answers like Slack."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def chat_postMessage(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("chat.postMessage", kwargs))
        return {"ok": True, "channel": "C1", "ts": "1.000001"}

    async def chat_update(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("chat.update", kwargs))
        raise api_error(200, {"ok": False, "error": "message_not_found"})


async def test_notifier_passes_configuration_and_closes_its_session() -> None:
    clients: list[FakeClient] = []

    def factory(**options: Any) -> AsyncWebClient:
        clients.append(FakeClient(**options))
        return clients[-1]  # type: ignore[return-value]

    notifier = SlackNotifier(
        token="xoxb-1", base_url="http://slack.test/api/", timeout=3, client_factory=factory
    )
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}]
    ref = await notifier.post(channel="#c", blocks=blocks, text="hi")
    assert ref == SlackMessageRef(channel="C1", ts="1.000001")
    with pytest.raises(SlackRejected):
        await notifier.update(ref=ref, blocks=blocks, text="hi again")
    [client] = clients  # one client for the notifier's life
    assert client.options["token"] == "xoxb-1"
    assert client.options["base_url"] == "http://slack.test/api/"
    assert client.options["timeout"] == 3
    handlers = client.options["retry_handlers"]
    assert all(isinstance(h, AsyncRetryHandler) for h in handlers)
    assert len(handlers) == 3
    assert client.calls == [
        ("chat.postMessage", {"channel": "#c", "blocks": blocks, "text": "hi"}),
        ("chat.update", {"channel": "C1", "ts": "1.000001", "blocks": blocks, "text": "hi again"}),
    ]
    session = client.options["session"]
    assert not session.closed
    await notifier.close()
    assert session.closed


async def test_email_recipients_must_be_a_list() -> None:
    notifier = EmailNotifier(host="h", port=25, sender="s@x", security="none")
    with pytest.raises(TypeError):
        await notifier.send(to="a@example.test", subject="s", text="t", html="h")
