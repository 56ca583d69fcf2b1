"""Slack Web API notifier: post a remediation's message, then update it in place.

Retries inside one call are short and bounded: 429 is retried after its
``Retry-After`` (when that is at most ``max_rate_limit_wait`` seconds), 5xx and
connection errors with exponential backoff. What is still failing after that is
raised as ``TemporaryError(delay=...)`` for the outbox to retry later, or as
``PermanentError`` (``SlackRejected``) when retrying cannot help (bad token, unknown
channel, invalid blocks). Nothing here ever blocks a remediation: callers deliver
through the outbox.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from remediator.domain.errors import PermanentError, RemediatorError, TemporaryError
from remediator.domain.notices import SlackMessageRef

__all__ = ["SlackMessageRef", "SlackNotifier", "SlackRejected"]

DEFAULT_BASE_URL = "https://slack.com/api/"
# Later attempts are the outbox's job; this is only the delay it is told to wait.
_TRANSIENT_DELAY = 5.0
# API error codes (HTTP 200, "ok": false) that describe Slack's state, not our request.
_TEMPORARY_CODES = frozenset(
    {
        "ratelimited",
        "rate_limited",
        "internal_error",
        "fatal_error",
        "service_unavailable",
        "request_timeout",
        "team_not_ready",
    }
)


class SlackRejected(PermanentError):
    """Slack refused the request for good; ``code`` is Slack's error code."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


class ClientFactory(Protocol):
    def __call__(
        self,
        *,
        token: str,
        base_url: str,
        timeout: int,
        session: aiohttp.ClientSession,
        retry_handlers: list[AsyncRetryHandler],
    ) -> AsyncWebClient: ...


def _retry_after(response: HttpResponse | AsyncSlackResponse | None) -> float | None:
    """Seconds from a ``Retry-After`` header, or None if absent or not a number."""
    if response is None:
        return None
    for name, value in response.headers.items():
        if name.lower() == "retry-after":
            raw = value[0] if isinstance(value, list) else value
            try:
                return max(float(int(str(raw).strip())), 0.0)
            except ValueError:
                return None  # an HTTP-date: Slack never sends one; let the outbox wait
    return None


class _BoundedRateLimitHandler(AsyncRateLimitErrorRetryHandler):
    """slack_sdk's 429 handler (sleeps ``Retry-After``), but never for long.

    A long wait inside the call would hold an outbox worker; past the bound the 429
    surfaces as ``TemporaryError(delay=Retry-After)`` instead.
    """

    def __init__(self, *, max_retry_count: int, max_wait: float) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self.max_wait = max_wait

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if response is None or response.status_code != 429:
            return False
        # The parent parses the header with int(); retry only when that will work.
        wait = _retry_after(response)
        return wait is not None and wait <= self.max_wait


class _ServerErrorHandler(AsyncRetryHandler):
    """5xx from Slack or a proxy in front of it: retried with backoff."""

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        return response is not None and response.status_code in (500, 502, 503, 504)


class SlackNotifier:
    """One aiohttp session and ``AsyncWebClient`` for the notifier's life; ``close()`` it.

    ``max_retries`` counts the retries of one call, whatever their cause (slack_sdk
    keeps one attempt counter per request across all retry handlers).
    """

    def __init__(
        self,
        *,
        token: str,
        base_url: str = DEFAULT_BASE_URL,
        timeout: int = 10,
        max_retries: int = 2,
        max_rate_limit_wait: float = 30.0,
        backoff_factor: float = 0.5,
        client_factory: ClientFactory = AsyncWebClient,
    ) -> None:
        self._token = token
        self._base_url = base_url
        self._timeout = timeout
        self._client_factory = client_factory
        backoff = BackoffRetryIntervalCalculator(backoff_factor=backoff_factor)
        self._retry_handlers: list[AsyncRetryHandler] = [
            _BoundedRateLimitHandler(max_retry_count=max_retries, max_wait=max_rate_limit_wait),
            _ServerErrorHandler(max_retry_count=max_retries, interval_calculator=backoff),
            # ClientConnectorError (refused, DNS) is a ClientOSError: covered here.
            AsyncConnectionErrorRetryHandler(
                max_retry_count=max_retries, interval_calculator=backoff
            ),
        ]
        self._session: aiohttp.ClientSession | None = None
        self._client: AsyncWebClient | None = None
        self._closed = False

    def _web(self) -> AsyncWebClient:
        # Created on first use: the session must be made inside the running loop.
        if self._closed:
            raise RuntimeError("SlackNotifier is closed")
        if self._client is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout)
            )
            self._client = self._client_factory(
                token=self._token,
                base_url=self._base_url,
                timeout=self._timeout,
                session=self._session,
                retry_handlers=self._retry_handlers,
            )
        return self._client

    async def check(self) -> None:
        """``auth.test``: is the token valid and Slack reachable? (startup, readiness)"""
        client = self._web()
        try:
            await client.auth_test()
        except Exception as exc:
            raise _map_error(exc, method="auth.test") from exc

    async def post(
        self, *, channel: str, blocks: Sequence[Mapping[str, Any]], text: str
    ) -> SlackMessageRef:
        client = self._web()
        try:
            response = await client.chat_postMessage(
                channel=channel, blocks=[dict(b) for b in blocks], text=text
            )
        except Exception as exc:
            raise _map_error(exc, method="chat.postMessage") from exc
        return SlackMessageRef(channel=str(response["channel"]), ts=str(response["ts"]))

    async def update(
        self, *, ref: SlackMessageRef, blocks: Sequence[Mapping[str, Any]], text: str
    ) -> None:
        client = self._web()
        try:
            await client.chat_update(
                channel=ref.channel, ts=ref.ts, blocks=[dict(b) for b in blocks], text=text
            )
        except Exception as exc:
            raise _map_error(exc, method="chat.update") from exc

    async def ephemeral(self, *, channel: str, user: str, text: str) -> None:
        """``chat.postEphemeral``: only ``user`` sees it, and only while in ``channel``."""
        client = self._web()
        try:
            await client.chat_postEphemeral(channel=channel, user=user, text=text)
        except Exception as exc:
            raise _map_error(exc, method="chat.postEphemeral") from exc

    async def close(self) -> None:
        self._closed = True
        self._client = None
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


def _map_error(exc: Exception, *, method: str) -> RemediatorError:
    """Vendor exceptions -> the two kinds the outbox acts on."""
    if isinstance(exc, SlackApiError):
        response = exc.response
        status = int(response.status_code)
        data = response.data if isinstance(response.data, dict) else {}
        code = str(data.get("error") or "")
        where = f"slack {method}: HTTP {status}" + (f" {code}" if code else "")
        if status == 429 or code in ("ratelimited", "rate_limited"):
            delay = _retry_after(response) or _TRANSIENT_DELAY
            return TemporaryError(f"{where} (rate limited)", delay=delay)
        if status >= 500 or code in _TEMPORARY_CODES:
            return TemporaryError(where, delay=_TRANSIENT_DELAY)
        if not code:
            # 200 without an error code, or 4xx with a non-JSON body: a proxy or a
            # hiccup, not a verdict on the request.
            return TemporaryError(f"{where} (unexpected response)", delay=_TRANSIENT_DELAY)
        return SlackRejected(where, code=code)
    if isinstance(exc, aiohttp.ClientError | TimeoutError | OSError):
        return TemporaryError(
            f"slack {method}: {type(exc).__name__}: {exc}", delay=_TRANSIENT_DELAY
        )
    if isinstance(exc, SlackClientError):
        # SlackRequestError and friends: the request could not even be built.
        return PermanentError(f"slack {method}: {exc}")
    if isinstance(exc, RemediatorError):
        return exc
    # Unknown failures are retried: at worst the outbox gives up after its attempts.
    return TemporaryError(f"slack {method}: {type(exc).__name__}: {exc}", delay=_TRANSIENT_DELAY)
