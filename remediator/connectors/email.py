"""SMTP notifier (aiosmtplib): one multipart/alternative mail (plain text + HTML).

Errors are mapped for the outbox: SMTP 4xx replies, timeouts and connection errors
are ``TemporaryError``; 5xx replies (bad credentials, refused recipients) and a
server lacking what the configuration asks for (STARTTLS, AUTH) are
``PermanentError``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Mapping, Sequence
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Literal

import aiosmtplib
from pydantic import SecretStr

from remediator.domain.errors import ConfigError, PermanentError, RemediatorError, TemporaryError

__all__ = ["EmailNotifier", "Security"]

log = logging.getLogger(__name__)

Security = Literal["none", "starttls", "tls"]
_TRANSIENT_DELAY = 30.0


class EmailNotifier:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        sender: str,
        security: Security,
        username: str | None = None,
        password: SecretStr | None = None,
        timeout: float = 30.0,
        tls_context: ssl.SSLContext | None = None,
        local_hostname: str | None = None,
    ) -> None:
        if security not in ("none", "starttls", "tls"):
            raise ConfigError(f"email security must be none, starttls or tls, not {security!r}")
        if (username is None) != (password is None):
            raise ConfigError("email username and password go together")
        self._host = host
        self._port = port
        self._sender = sender
        self._security = security
        self._username = username
        self._password = password
        self._timeout = timeout
        self._tls_context = tls_context
        self._local_hostname = local_hostname

    async def send(
        self,
        *,
        to: Sequence[str],
        subject: str,
        text: str,
        html: str,
        message_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Send one mail to ``to``; ``message_id`` lets receivers drop redeliveries.

        Pass a ``message_id`` derived from the notice's dedup key: the outbox may
        deliver twice, and a stable Message-ID is what mail clients deduplicate on.
        """
        if isinstance(to, str):  # a str is a Sequence[str] too: "a@b" -> "a", "@", "b"
            raise TypeError("to must be a list of addresses, not a string")
        if not to:
            raise PermanentError("email: no recipients")
        if self._local_hostname is None:
            # aiosmtplib would call socket.getfqdn() on the loop: a DNS lookup that can
            # stall everything for seconds on a badly resolving host.
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        message = self._message(
            to=to, subject=subject, text=text, html=html, message_id=message_id, headers=headers
        )
        try:
            errors, _ = await aiosmtplib.send(
                message,
                hostname=self._host,
                port=self._port,
                username=self._username,
                password=None if self._password is None else self._password.get_secret_value(),
                use_tls=self._security == "tls",
                # False, not None: None would upgrade whenever offered, and "none"
                # means the operator chose plain SMTP (e.g. a local relay).
                start_tls=self._security == "starttls",
                tls_context=self._tls_context,
                timeout=self._timeout,
                local_hostname=self._local_hostname,
            )
        except Exception as exc:
            raise _map_error(exc) from exc
        if errors:
            # Some recipients were refused, the rest got it: a retry would mail them
            # twice, so this is logged rather than raised.
            refused = ", ".join(f"{rcpt} ({reply.code})" for rcpt, reply in errors.items())
            log.warning("email %r: recipients refused: %s", subject, refused)

    def _message(
        self,
        *,
        to: Sequence[str],
        subject: str,
        text: str,
        html: str,
        message_id: str | None,
        headers: Mapping[str, str] | None,
    ) -> EmailMessage:
        message = EmailMessage()
        try:
            message["From"] = self._sender
            message["To"] = ", ".join(to)
            # Line breaks in a header would be header injection: the subject's are
            # folded to spaces; anywhere else the email package refuses them, which
            # becomes a PermanentError below rather than a crash.
            message["Subject"] = " ".join(subject.split())
            message["Date"] = formatdate(usegmt=True)
            message["Message-ID"] = message_id or make_msgid(domain=_domain(self._sender))
            for name, value in (headers or {}).items():
                message[name] = value
        except (ValueError, TypeError) as exc:
            raise PermanentError(f"email: invalid header: {exc}") from exc
        message.set_content(text)
        message.add_alternative(html, subtype="html")
        return message


def _domain(sender: str) -> str:
    try:
        return Address(addr_spec=sender).domain or "remediator.invalid"
    except (ValueError, IndexError):
        return "remediator.invalid"


def _map_error(exc: Exception) -> RemediatorError:
    """aiosmtplib/socket exceptions -> the two kinds the outbox acts on."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        if any(400 <= code < 500 for code in codes):
            return TemporaryError(f"email: recipients refused: {exc}", delay=_TRANSIENT_DELAY)
        return PermanentError(f"email: all recipients refused: {exc}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        what = f"email: {type(exc).__name__}: {exc.code} {exc.message}"
        if 400 <= exc.code < 500:
            return TemporaryError(what, delay=_TRANSIENT_DELAY)
        if 500 <= exc.code < 600:
            return PermanentError(what)
        return TemporaryError(what, delay=_TRANSIENT_DELAY)
    if isinstance(exc, aiosmtplib.SMTPNotSupported) or (
        # aiosmtplib raises a bare SMTPException when the server lacks STARTTLS or
        # AUTH: the configuration asks for what this server cannot do, not bad luck.
        type(exc) is aiosmtplib.SMTPException and "not supported" in str(exc)
    ):
        return PermanentError(f"email: {exc}")
    if _caused_by(exc, ssl.SSLCertVerificationError):
        # With implicit TLS aiosmtplib wraps it in SMTPConnectError: look down the chain.
        return PermanentError(f"email: TLS certificate not trusted: {exc}")
    if isinstance(exc, RemediatorError):
        return exc
    # SMTPConnectError, timeouts, disconnects, OSError, TLS handshake failures...
    return TemporaryError(f"email: {type(exc).__name__}: {exc}", delay=_TRANSIENT_DELAY)


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
