"""Post-remediation checks: is the service healthy again, has the alert condition cleared?

Outcomes are data (:class:`Verdict`); only "could not ask at all" conditions that say
nothing about the service (Prometheus down, a malformed query) raise.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from remediator.domain.errors import PermanentError, TemporaryError

__all__ = ["Verdict", "http_health", "prometheus_query_empty"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    ok: bool
    detail: str


async def http_health(url: str, *, timeout_seconds: float) -> Verdict:
    """One GET; healthy iff it answers 2xx within ``timeout_seconds``.

    An unreachable or slow endpoint is unhealthy (that is what is being checked),
    not an error.
    """
    client_timeout = aiohttp.ClientTimeout(total=timeout_seconds)
    try:
        async with (
            aiohttp.ClientSession(timeout=client_timeout) as session,
            session.get(url, allow_redirects=False) as response,
        ):
            ok = 200 <= response.status < 300
            return Verdict(ok=ok, detail=f"GET {url}: HTTP {response.status}")
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        return Verdict(ok=False, detail=f"GET {url}: {type(exc).__name__}: {exc}")


async def prometheus_query_empty(
    base_url: str,
    query: str,
    *,
    timeout_seconds: float,
    poll_seconds: float = 5.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Verdict:
    """Poll an instant query until it returns an empty vector, for up to ``timeout_seconds``.

    ok=False when it still returned series at the deadline. Raises PermanentError for
    a query Prometheus rejects (HTTP 400/422) or a non-vector result, TemporaryError
    when Prometheus could not be asked successfully even once before the deadline.
    """
    url = base_url.rstrip("/") + "/api/v1/query"
    deadline = clock() + timeout_seconds
    last_error: str | None = None
    last_count: int | None = None
    async with aiohttp.ClientSession() as session:
        while True:
            remaining = max(deadline - clock(), 0.1)
            try:
                count = await _series_count(session, url, query, timeout_seconds=remaining)
            except _Unavailable as exc:
                last_error = str(exc)
            else:
                if count == 0:
                    return Verdict(ok=True, detail=f"{query!r} returned an empty vector")
                last_count, last_error = count, None
            remaining = deadline - clock()
            if remaining <= 0:
                break
            await sleep(min(poll_seconds, remaining))
    if last_count is None:
        raise TemporaryError(f"prometheus {url}: {last_error}", delay=poll_seconds)
    return Verdict(
        ok=False,
        detail=f"{query!r} still returned {last_count} series after {timeout_seconds:g}s",
    )


class _Unavailable(Exception):
    pass


async def _series_count(
    session: aiohttp.ClientSession, url: str, query: str, *, timeout_seconds: float
) -> int:
    try:
        async with session.get(
            url, params={"query": query}, timeout=aiohttp.ClientTimeout(total=timeout_seconds)
        ) as response:
            status = response.status
            body: Any = await response.json(content_type=None)
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
        raise _Unavailable(f"{type(exc).__name__}: {exc}") from exc
    if status in (400, 422):
        error = body.get("error") if isinstance(body, dict) else body
        raise PermanentError(f"prometheus rejected {query!r}: HTTP {status}: {error}")
    if status != 200 or not isinstance(body, dict) or body.get("status") != "success":
        raise _Unavailable(f"HTTP {status}: {str(body)[:200]}")
    data = body.get("data") or {}
    if data.get("resultType") != "vector":
        raise PermanentError(
            f"prometheus query {query!r} returned a {data.get('resultType')}, not a vector"
        )
    return len(data.get("result") or [])
