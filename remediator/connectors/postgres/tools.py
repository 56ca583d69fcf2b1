"""The PostgreSQL client binaries and running them without leaking the password."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from remediator.connectors.childenv import child_env
from remediator.domain.errors import ConfigError, PermanentError, TemporaryError

__all__ = ["ToolResult", "find_bindir", "run_tool", "server_major"]

DEBIAN_ROOT = Path("/usr/lib/postgresql")
# Output we keep for messages: enough for pg_restore's error list, bounded for logs.
_KEEP_OUTPUT = 8000
# libpq/pg_dump phrases for trouble that may clear by itself.
_TEMPORARY_OUTPUT = re.compile(
    r"could not connect|connection refused|connection to server .* failed: "
    r"(?:Connection refused|timeout|No route)|timeout expired|too many connections|"
    r"the database system is (?:starting up|shutting down|in recovery mode)|"
    r"server closed the connection unexpectedly|could not serialize|deadlock detected|"
    r"lock timeout|could not obtain lock|remaining connection slots are reserved",
    re.IGNORECASE,
)


def server_major(server_version_num: int) -> int:
    """``150014`` -> 15 (``SHOW server_version_num``; 10+ numbering)."""
    return server_version_num // 10000


def find_bindir(*, server_major: int, root: Path = DEBIAN_ROOT) -> Path:
    """Debian's client binaries that can dump this server.

    ``pg_dump`` refuses servers newer than itself and is best at its own major, so the
    exact major is preferred, then the newest newer one.
    """
    majors = sorted(
        int(p.parent.name)
        for p in root.glob("*/bin")
        if p.parent.name.isdigit() and (p / "pg_dump").is_file()
    )
    if server_major in majors:
        return root / str(server_major) / "bin"
    newer = [m for m in majors if m > server_major]
    if newer:
        return root / str(newer[-1]) / "bin"
    raise ConfigError(
        f"no PostgreSQL client binaries for server major {server_major} under {root} "
        f"(found {majors or 'none'}); install postgresql-client-{server_major}"
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolResult:
    returncode: int
    stdout: str
    stderr: str


async def run_tool(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    what: str,
    secret: str | None,
    timeout_s: float,
    cwd: Path | None = None,
    stdin: int | None = None,
    check: bool = True,
) -> ToolResult:
    """Run one client tool; nonzero exit -> TemporaryError or PermanentError with stderr.

    The tool's environment is the allow-listed one (:func:`child_env`) plus ``env``, the
    variables set for this call (``PGPASSWORD``...): never the daemon's own.
    Output is scrubbed of ``secret`` before it is kept anywhere.
    """
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=child_env(env),
            cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL if stdin is None else stdin,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError as exc:
        raise ConfigError(f"{what}: {argv[0]} not found") from exc
    try:
        async with asyncio.timeout(timeout_s):
            out, err = await proc.communicate()
    except TimeoutError as exc:
        proc.kill()
        await proc.wait()
        message = f"{what}: no result after {timeout_s:.0f}s, killed"
        raise TemporaryError(message, delay=30.0) from exc
    except asyncio.CancelledError:
        # Never leave a pg_dump or a migration running behind a cancelled remediation.
        proc.kill()
        await proc.wait()
        raise
    result = ToolResult(
        returncode=proc.returncode if proc.returncode is not None else -1,
        stdout=_clean(out, secret),
        stderr=_clean(err, secret),
    )
    if check and result.returncode != 0:
        text = result.stderr.strip() or result.stdout.strip() or "(no output)"
        message = f"{what}: exit {result.returncode}: {text[-_KEEP_OUTPUT:]}"
        if _TEMPORARY_OUTPUT.search(text):
            raise TemporaryError(message, delay=10.0)
        raise PermanentError(message)
    return result


def _clean(data: bytes, secret: str | None) -> str:
    text = data.decode("utf-8", errors="replace")
    return text.replace(secret, "***") if secret else text
