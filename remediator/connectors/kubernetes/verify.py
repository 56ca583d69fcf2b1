"""Post-remediation checks: is the service healthy again?

Outcomes are data (:class:`Verdict`). Whether the alert condition cleared is asked of
Prometheus (``remediator.connectors.prometheus``).
"""

from __future__ import annotations

import aiohttp

from remediator.connectors.prometheus import Verdict

__all__ = ["Verdict", "http_health"]


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
