"""A PostgreSQL DSN is a secret: the one place that shows it redacted or scrubs it out of
text (driver and tool messages). Pure: used by the journal and the database connector.

The password may sit in the URL's userinfo or in a ``password=`` parameter (or, for a
``key=value`` DSN, a ``password=`` pair); each is masked.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from pydantic import SecretStr

_PASSWORD_KV = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
# scheme://user:PASSWORD@ when the rest of the URL does not parse.
_USERINFO_PASSWORD = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^:/@]*:([^/]*)@")


def unsplit(scheme: str, netloc: str, path: str, query: str, fragment: str = "") -> str:
    """``urlunsplit`` that keeps ``//`` when the authority is empty.

    ``urlunsplit`` drops it for schemes it does not know (``postgresql`` is one), so
    the Unix-socket form ``postgresql:///db?host=/run/postgresql`` came back as
    ``postgresql:/db?...``, which libpq rejects.
    """
    url = f"{scheme}://{netloc}{path}"
    if query:
        url += f"?{query}"
    if fragment:
        url += f"#{fragment}"
    return url


def is_url(raw: str) -> bool:
    """A ``scheme://`` URL, also with an empty authority (``postgresql:///db``)."""
    try:
        parts = urlsplit(raw)
    except ValueError:
        return False
    return bool(parts.scheme) and raw[len(parts.scheme) :].startswith("://")


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
    """The DSN with its password (userinfo or ``password=`` parameter) replaced by ``***``.

    Whatever the scheme; a string that is neither a URL nor ``key=value`` pairs is not
    shown at all (it may be a password pasted where the DSN belongs).
    """
    raw = reveal(dsn)
    try:
        parts = urlsplit(raw)
    except ValueError:
        return "<unparseable DSN>"
    if not is_url(raw):
        if "=" in raw:  # key=value form: blank anything that looks like a password.
            return _PASSWORD_KV.sub(r"\1***", raw)
        return "<unparseable DSN>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{hosts}" if ":" in userinfo else f"{user}@{hosts}"
    query = urlencode(
        [
            (k, "***" if "password" in k.lower() else v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="*",
    )
    return unsplit(parts.scheme, netloc, parts.path, query, parts.fragment)


def scrub(text: str, dsn: str | SecretStr) -> str:
    """``text`` with the DSN and its password blanked (tool and driver output)."""
    raw = reveal(dsn)
    text = text.replace(raw, redact(raw))
    password = password_of(raw)
    if password:
        text = text.replace(password, "***")
        match = _USERINFO_PASSWORD.match(raw)
        quoted = match.group(1) if match else None  # as written: maybe percent-encoded
        if quoted and quoted != password:
            text = text.replace(quoted, "***")
    return text
