"""Where a service's DSN comes from, and how it is kept out of logs and argv.

A DSN is resolved from exactly one source: an environment variable, a file (a
Kubernetes Secret mounted into the pod is a file), or a named secret read through an
injected :data:`SecretSource` (the Kubernetes connector reads Secrets through the
API). It is held as :class:`pydantic.SecretStr` so ``repr``/``str``/logging show
``**********``; :func:`redact` is the only form that may be shown to people.

Only URI DSNs (``postgresql://user:password@host:port/db?sslmode=...``) are
accepted: asyncpg and the libpq tools both understand them, so one string serves the
driver and ``pg_dump``/``pg_restore``/``psql``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import asyncpg
from pydantic import SecretStr

from remediator.connectors.childenv import child_env
from remediator.connectors.postgres.errors import map_exception, safe_cause
from remediator.domain.dsn import password_of, redact, reveal, scrub, unsplit
from remediator.domain.errors import ConfigError, PermanentError, TemporaryError

__all__ = [
    "LibpqTarget",
    "SecretSource",
    "close_quietly",
    "connect",
    "database_of",
    "libpq_target",
    "password_of",
    "redact",
    "resolve_dsn",
    "scrub",
    "with_database",
]

# name of a secret -> its value (e.g. a Kubernetes Secret's "dsn" key). Raises
# TemporaryError/PermanentError itself; never returns an empty string on purpose.
SecretSource = Callable[[str], Awaitable[str]]

_SCHEMES = ("postgresql", "postgres")


async def resolve_dsn(
    *,
    env: str | None = None,
    file: Path | None = None,
    secret: str | None = None,
    secret_source: SecretSource | None = None,
    environ: Mapping[str, str] | None = None,
) -> SecretStr:
    """The DSN from the one source given; errors name the source, never the value."""
    given = [name for name, v in (("env", env), ("file", file), ("secret", secret)) if v]
    if len(given) != 1:
        raise ConfigError(f"give exactly one DSN source (env, file or secret), got {given}")
    if env:
        value = (os.environ if environ is None else environ).get(env, "")
        where = f"environment variable {env}"
        if not value:
            raise ConfigError(f"{where} is not set or empty")
    elif file:
        where = f"file {file}"
        try:
            value = await asyncio.to_thread(file.read_text, encoding="utf-8")
        except FileNotFoundError as exc:
            raise ConfigError(f"{where} does not exist") from exc
        except OSError as exc:
            # e.g. a Secret volume being remounted; worth another try.
            raise TemporaryError(f"{where} cannot be read: {exc.strerror}", delay=5.0) from exc
    else:
        assert secret is not None
        where = f"secret {secret}"
        if secret_source is None:
            raise ConfigError(f"{where}: no secret source configured to read it")
        value = await secret_source(secret)
    value = value.strip()  # files and Secrets usually end with a newline
    if not value:
        raise ConfigError(f"{where} is empty")
    if _scheme(value) not in _SCHEMES:
        raise ConfigError(f"{where} does not hold a postgresql:// URI")
    return SecretStr(value)


def _scheme(raw: str) -> str | None:
    try:
        return urlsplit(raw).scheme
    except ValueError:  # e.g. a broken [IPv6] host
        return None


def database_of(dsn: str | SecretStr) -> str:
    path = urlsplit(reveal(dsn)).path.lstrip("/")
    return unquote(path) if path else ""


def with_database(dsn: SecretStr, database: str) -> SecretStr:
    """The same server and credentials, another database (tests, maintenance)."""
    parts = urlsplit(dsn.get_secret_value())
    return SecretStr(unsplit(parts.scheme, parts.netloc, "/" + database, parts.query,
                             parts.fragment))  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class LibpqTarget:
    """How to point a libpq tool at the database without the password in argv.

    ``conninfo`` goes on the command line (``--dbname=``): it is visible in ``ps``, so it
    carries everything but the password, which travels in ``env`` as ``PGPASSWORD``
    (only the same user and root can read a process's environment). ``env`` is left
    out of ``repr``: it holds the password.
    """

    conninfo: str
    env: Mapping[str, str] = field(repr=False)
    database: str


def libpq_target(dsn: SecretStr, *, base_env: Mapping[str, str] | None = None) -> LibpqTarget:
    raw = dsn.get_secret_value()
    if _scheme(raw) not in _SCHEMES:
        raise PermanentError(f"not a postgresql:// URI: {redact(raw)}")
    parts = urlsplit(raw)
    password = password_of(raw)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        netloc = f"{userinfo.split(':', 1)[0]}@{hosts}"
    query = urlencode(
        [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "password"]
    )
    conninfo = unsplit("postgresql", netloc, parts.path, query)
    # Allow-listed (child_env): no daemon secrets, and no stray PG* variables (PGSERVICE,
    # PGPASSFILE, PGOPTIONS...) that would silently change which server or settings the
    # tool uses; the DSN alone decides.
    values = {
        "PGAPPNAME": "remediator",
        "PGCONNECT_TIMEOUT": "10",
        "LC_MESSAGES": "C",  # error text we parse and show is English
    }
    if password is not None:
        values["PGPASSWORD"] = password
    env = child_env(values, parent=base_env)
    return LibpqTarget(conninfo=conninfo, env=env, database=database_of(raw))


async def connect(
    dsn: SecretStr, *, what: str, timeout_s: float = 10.0, application_name: str | None = None
) -> asyncpg.Connection:
    """An asyncpg connection, or TemporaryError/PermanentError naming ``what``, never the DSN."""
    settings = {"application_name": application_name[:63]} if application_name else None
    try:
        return await asyncpg.connect(
            dsn.get_secret_value(), timeout=timeout_s, server_settings=settings
        )
    except Exception as exc:  # noqa: BLE001 - every failure is mapped, none swallowed
        secret = password_of(dsn)
        err = map_exception(exc, what=f"{what}: connect to {redact(dsn)}", secret=secret)
        raise err from safe_cause(exc, secret)


async def close_quietly(conn: asyncpg.Connection) -> None:
    """Close without raising: a broken connection must not hide the error that broke it."""
    try:
        await conn.close(timeout=5)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
        conn.terminate()
