"""A real SMTP server (aiosmtpd) in a thread, collecting every message it accepts.

AUTH LOGIN/PLAIN is offered without TLS (``auth_require_tls=False``) with the known
credentials in the endpoints; set ``peer.auth_required = True`` (any time) to refuse
mail from unauthenticated clients with 530. Messages arrive parsed as ``email.message.EmailMessage``.
"""

from __future__ import annotations

import email
import email.policy
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from tests.env.base import Peer, PeerError, free_port

SMTP_USER = "remediator"
SMTP_PASSWORD = "smtp-test-password"


@dataclass
class Delivery:
    """One accepted message with its envelope (who authenticated, who it was for)."""

    message: EmailMessage
    mail_from: str
    rcpt_tos: list[str]
    auth_user: str | None


class SmtpPeer(Peer):
    name = "smtp"
    version = "aiosmtpd"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.user = SMTP_USER
        self.password = SMTP_PASSWORD
        self.auth_required = False
        self.deliveries: list[Delivery] = []
        self._cond = threading.Condition()
        self._controller: Any = None
        self._log = self.workdir / "smtp.log"

    @property
    def messages(self) -> list[EmailMessage]:
        with self._cond:
            return [d.message for d in self.deliveries]

    def clear(self) -> None:
        with self._cond:
            self.deliveries.clear()

    def wait_for_messages(self, count: int = 1, timeout: float = 10.0) -> list[EmailMessage]:
        """Block until at least ``count`` messages arrived; PeerError after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.deliveries) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise PeerError(
                        f"smtp: {len(self.deliveries)} of {count} messages after {timeout}s;"
                        f" log {self._log}"
                    )
                self._cond.wait(left)
            return [d.message for d in self.deliveries]

    def start(self, deps: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        import aiosmtpd
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword

        peer = self

        def authenticator(
            server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
        ) -> AuthResult:
            ok = (
                isinstance(auth_data, LoginPassword)
                and auth_data.login.decode() == peer.user
                and auth_data.password.decode() == peer.password
            )
            peer._note(f"AUTH {mechanism} {'ok' if ok else 'FAILED'}")
            # auth_data lands in session.auth_data, so deliveries know who logged in.
            return AuthResult(success=ok, handled=False, auth_data=auth_data)

        class Handler:
            async def handle_MAIL(
                self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
            ) -> str:
                # Enforced here rather than with aiosmtpd's auth_required, which warns
                # (UserWarning: AUTH without TLS) on every connection: an error under
                # pytest's filterwarnings=error.
                if peer.auth_required and not session.authenticated:
                    peer._note(f"MAIL from={address} refused: not authenticated")
                    return "530 5.7.0 Authentication required"
                envelope.mail_from = address
                envelope.mail_options.extend(options)
                return "250 OK"

            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                raw = envelope.original_content or envelope.content
                if isinstance(raw, str):
                    raw = raw.encode()
                message = email.message_from_bytes(raw, policy=email.policy.default)
                assert isinstance(message, EmailMessage)
                auth = session.auth_data if session.authenticated else None
                user = auth.login.decode() if isinstance(auth, LoginPassword) else None
                delivery = Delivery(message, envelope.mail_from, list(envelope.rcpt_tos), user)
                with peer._cond:
                    peer.deliveries.append(delivery)
                    peer._cond.notify_all()
                peer._note(
                    f"DATA from={envelope.mail_from} to={envelope.rcpt_tos} auth={user}"
                    f" subject={message.get('Subject')!r}"
                )
                return "250 Message accepted for delivery"

        port = free_port()
        self._controller = Controller(
            Handler(),
            hostname="127.0.0.1",
            port=port,
            authenticator=authenticator,
            auth_require_tls=False,  # loopback test server: plain-text AUTH is the point
            ready_timeout=10,
        )
        try:
            self._controller.start()
        except Exception as exc:
            self._controller = None
            raise PeerError(f"smtp: aiosmtpd did not start on 127.0.0.1:{port}: {exc}") from exc
        self.ports = [port]
        self._note(f"listening on 127.0.0.1:{port}")
        return {
            "smtp": f"127.0.0.1:{port}",
            "smtp_user": self.user,
            "smtp_password": self.password,
            "versions": {"aiosmtpd": aiosmtpd.__version__},
        }

    def stop(self) -> None:
        if self._controller is not None:
            try:
                self._controller.stop()
            except Exception as exc:  # noqa: BLE001 - teardown must go on
                self.progress(f"smtp: stop failed: {exc}")
            self._controller = None
            self._note("stopped")
        super().stop()

    def _note(self, line: str) -> None:
        with self._log.open("a") as fh:
            fh.write(f"{time.strftime('%H:%M:%S')} {line}\n")
