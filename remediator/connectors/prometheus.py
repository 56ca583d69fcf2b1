"""Prometheus, read-only: has a condition cleared, and what did an incident cost?

Only instant queries (``GET /api/v1/query``) are ever sent. Outcomes are data
(:class:`Verdict`); only "could not ask at all" conditions that say nothing about the
service (Prometheus down, a malformed query) raise, mapped to our own errors.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from remediator.domain.errors import PermanentError, TemporaryError

__all__ = ["Prometheus", "Verdict", "prometheus_query_empty"]

_SAMPLE_SERIES = 5  # series kept as evidence when a condition has not cleared


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    ok: bool
    detail: str
    # The labels of some series still returned (evidence); empty when it cleared.
    series: tuple[Mapping[str, str], ...] = ()
    polls: int = 0


async def prometheus_query_empty(
    base_url: str,
    query: str,
    *,
    timeout_seconds: float,
    poll_seconds: float = 5.0,
    match_labels: Mapping[str, str] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Verdict:
    """Poll an instant query until it returns no series, for up to ``timeout_seconds``.

    ``match_labels``: only series whose labels do not contradict these count (a series
    without the label counts; one with another value is some other service's).

    ok=False when it still returned series at the deadline. Raises PermanentError for
    a query Prometheus rejects (HTTP 400/422) or a non-vector result, TemporaryError
    when Prometheus could not be asked successfully even once before the deadline.
    """
    url = base_url.rstrip("/") + "/api/v1/query"
    deadline = clock() + timeout_seconds
    last_error: str | None = None
    last: list[Mapping[str, str]] | None = None
    polls = 0
    async with aiohttp.ClientSession() as session:
        while True:
            remaining = max(deadline - clock(), 0.1)
            polls += 1
            try:
                result = await _vector(session, url, query, timeout_seconds=remaining)
            except _Unavailable as exc:
                last_error = str(exc)
            else:
                last = [s for s in result if _belongs(s, match_labels or {})]
                last_error = None
                if not last:
                    return Verdict(ok=True, detail=f"{query!r} returned no series", polls=polls)
            remaining = deadline - clock()
            if remaining <= 0:
                break
            await sleep(min(poll_seconds, remaining))
    if last is None:
        raise TemporaryError(f"prometheus {url}: {last_error}", delay=poll_seconds)
    return Verdict(
        ok=False,
        detail=f"{query!r} still returned {len(last)} series after {timeout_seconds:g}s",
        series=tuple(last[:_SAMPLE_SERIES]),
        polls=polls,
    )


class Prometheus:
    """The configured Prometheus (``prometheus.url``)."""

    def __init__(
        self,
        *,
        base_url: str,
        timeout_seconds: float = 10.0,
        poll_seconds: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout = timeout_seconds
        self._poll = poll_seconds
        self._clock = clock
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"Prometheus(base_url={self.base_url!r})"

    async def wait_until_empty(
        self, query: str, *, window_seconds: float, match_labels: Mapping[str, str]
    ) -> Verdict:
        return await prometheus_query_empty(
            self.base_url,
            query,
            timeout_seconds=window_seconds,
            poll_seconds=self._poll,
            match_labels=match_labels,
            clock=self._clock,
            sleep=self._sleep,
        )

    async def value(self, query: str) -> float | None:
        """The sum of an instant query's values (None: no series)."""
        url = self.base_url + "/api/v1/query"
        async with aiohttp.ClientSession() as session:
            try:
                result = await _vector(session, url, query, timeout_seconds=self._timeout)
            except _Unavailable as exc:
                raise TemporaryError(f"prometheus {url}: {exc}", delay=self._poll) from exc
        values = [float(s["__value__"]) for s in result if "__value__" in s]
        return sum(values) if values else None


class _Unavailable(Exception):
    pass


def _belongs(series: Mapping[str, str], match_labels: Mapping[str, str]) -> bool:
    return all(series.get(k, v) == v for k, v in match_labels.items())


async def _vector(
    session: aiohttp.ClientSession, url: str, query: str, *, timeout_seconds: float
) -> list[dict[str, str]]:
    """The series of an instant query: labels, with the sample under ``__value__``."""
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
    series = []
    for item in data.get("result") or []:
        labels = {str(k): str(v) for k, v in (item.get("metric") or {}).items()}
        value = item.get("value") or [None, None]
        if len(value) == 2 and value[1] is not None:
            labels["__value__"] = str(value[1])
        series.append(labels)
    return series
