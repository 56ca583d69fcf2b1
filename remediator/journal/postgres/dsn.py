"""The journal's DSN is a secret: only its redacted form is ever shown.

``postgresql://user:password@host:5432/db?sslmode=require`` (``postgres://`` too): the
password may sit in the userinfo or in a ``password=`` parameter; both are masked.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from pydantic import SecretStr

SCHEMES = ("postgresql", "postgres")
_USERINFO_PASSWORD = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^:/@]*:([^/@]*)@")


def is_postgres_url(url: str) -> bool:
    return url.startswith(tuple(f"{scheme}://" for scheme in SCHEMES))


def reveal(dsn: str | SecretStr) -> str:
    return dsn.get_secret_value() if isinstance(dsn, SecretStr) else dsn


def password_of(dsn: str | SecretStr) -> str | None:
    raw = reveal(dsn)
    try:
        parts = urlsplit(raw)
    except ValueError:  # e.g. a broken [IPv6] host: the userinfo may still be there
        match = _USERINFO_PASSWORD.match(raw)
        return unquote(match.group(1)) if match else None
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "password" and value:
            return value
    return unquote(parts.password) if parts.password else None


def redact(dsn: str | SecretStr) -> str:
    """The DSN with its password replaced by ``***``; ``<unparseable DSN>`` when it is
    not a URL at all (it may be a password pasted where the DSN belongs)."""
    raw = reveal(dsn)
    try:
        parts = urlsplit(raw)
    except ValueError:
        return "<unparseable DSN>"
    if not (parts.scheme and parts.netloc):
        return "<unparseable DSN>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{hosts}" if ":" in userinfo else f"{user}@{hosts}"
    query = urlencode(
        [
            (key, "***" if "password" in key.lower() else value)
            for key, value in parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="*",
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def scrub(text: str, dsn: str | SecretStr) -> str:
    """``text`` with the DSN and its password blanked (driver messages may quote them)."""
    raw = reveal(dsn)
    text = text.replace(raw, redact(raw))
    password = password_of(raw)
    if password:
        text = text.replace(password, "***")
        match = _USERINFO_PASSWORD.match(raw)
        written = match.group(1) if match else None  # as written: maybe percent-encoded
        if written and written != password:
            text = text.replace(written, "***")
    return text
