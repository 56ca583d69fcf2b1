"""EmailNotifier against the SMTP peer (tests/env/smtp.py) and TLS servers of our own."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from remediator.connectors.email import EmailNotifier, Security
from remediator.domain.errors import PermanentError, TemporaryError
from remediator.domain.notices import email_html, email_subject, email_text
from tests.env.base import free_port
from tests.unit.notify import samples

pytestmark = pytest.mark.integration


@pytest.fixture
def smtp(smtp_server: Any) -> Iterator[Any]:
    smtp_server.clear()
    yield smtp_server
    smtp_server.clear()


def notifier_for(smtp: Any, **overrides: Any) -> EmailNotifier:
    host, port = smtp.endpoints["smtp"].rsplit(":", 1)
    options: dict[str, Any] = {
        "host": host,
        "port": int(port),
        "username": smtp.endpoints["smtp_user"],
        "password": SecretStr(smtp.endpoints["smtp_password"]),
        "security": "none",
        "sender": "remediator@example.test",
        "timeout": 5.0,
        "local_hostname": "remediator.test",
    }
    options.update(overrides)
    return EmailNotifier(**options)


def parts(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None
    assert html is not None
    return text.get_content(), html.get_content()


async def test_mail_arrives_with_text_and_html(smtp: Any) -> None:
    record = samples.failed()
    await notifier_for(smtp).send(
        to=["oncall@example.test", "shop@example.test"],
        subject=email_subject(record),
        text=email_text(record, record_url=samples.RECORD_URL),
        html=email_html(record, record_url=samples.RECORD_URL),
        message_id="<rem_2.failed@remediator.test>",
    )
    [message] = smtp.wait_for_messages(1, timeout=10)
    delivery = smtp.deliveries[0]
    assert delivery.auth_user == smtp.endpoints["smtp_user"]
    assert delivery.mail_from == "remediator@example.test"
    assert delivery.rcpt_tos == ["oncall@example.test", "shop@example.test"]

    assert message["Subject"] == email_subject(record)
    assert "checkout: rollback failed (v1.1.0 → v1.0.0" in message["Subject"]
    assert message["From"] == "remediator@example.test"
    assert message["To"] == "oncall@example.test, shop@example.test"
    assert message["Message-ID"] == "<rem_2.failed@remediator.test>"
    assert message["Date"]
    assert message.get_content_type() == "multipart/alternative"

    text, html = parts(message)
    assert "Failed: the remediation did not complete" in text
    assert "Versions:    v1.1.0 → v1.0.0 (revision 42 → 41)" in text
    assert "verify_health: failed - 0/3 ready after 540s" in text
    assert f"Rollback record: {samples.RECORD_URL}" in text
    assert "<h1>Rollback record: shop/checkout</h1>" in html
    assert '<td class="failed">failed</td><td>0/3 pods ready</td>' in html
    assert f'href="{samples.RECORD_URL}"' in html


async def test_hostile_content_survives_transport_escaped(smtp: Any) -> None:
    record = samples.hostile()
    await notifier_for(smtp).send(
        to=["oncall@example.test"],
        subject=email_subject(record),
        text=email_text(record),
        html=email_html(record),
    )
    [message] = smtp.wait_for_messages(1, timeout=10)
    text, html = parts(message)
    assert samples.HOSTILE_SUMMARY in text  # plain text carries it verbatim
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert message["Message-ID"].endswith("@example.test>")


async def test_wrong_password_is_permanent(smtp: Any) -> None:
    notifier = notifier_for(smtp, password=SecretStr("wrong"))
    with pytest.raises(PermanentError, match="535"):
        await notifier.send(to=["a@example.test"], subject="s", text="t", html="<p>h</p>")
    assert smtp.messages == []


async def test_starttls_against_a_server_without_it_is_permanent(smtp: Any) -> None:
    notifier = notifier_for(smtp, security="starttls")
    with pytest.raises(PermanentError, match=r"(?i)starttls"):
        await notifier.send(to=["a@example.test"], subject="s", text="t", html="<p>h</p>")


async def test_server_down_is_temporary() -> None:
    notifier = EmailNotifier(
        host="127.0.0.1",
        port=free_port(),  # nothing listens here
        security="none",
        sender="remediator@example.test",
        timeout=2.0,
        local_hostname="remediator.test",
    )
    with pytest.raises(TemporaryError) as err:
        await notifier.send(to=["a@example.test"], subject="s", text="t", html="<p>h</p>")
    assert err.value.__cause__ is not None


async def test_header_injection_is_refused(smtp: Any) -> None:
    notifier = notifier_for(smtp)
    # Line breaks in the subject are folded away, never turned into a header.
    await notifier.send(
        to=["a@example.test"], subject="hi\r\nBcc: victim@example.test", text="t", html="h"
    )
    [message] = smtp.wait_for_messages(1, timeout=10)
    assert message["Subject"] == "hi Bcc: victim@example.test"
    assert message["Bcc"] is None
    assert smtp.deliveries[0].rcpt_tos == ["a@example.test"]
    with pytest.raises(PermanentError):
        await notifier.send(
            to=["a@example.test\r\nBcc: victim@example.test"], subject="s", text="t", html="h"
        )


# -- TLS: the shared peer speaks plain SMTP, so these run their own aiosmtpd ---------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


class _Collect:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.auth_users: list[str | None] = []
        self.event = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        import email

        message = email.message_from_bytes(envelope.original_content, policy=default_policy)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        self.auth_users.append(session.auth_data.login.decode() if session.authenticated else None)
        self.event.set()
        return "250 OK"


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
    from aiosmtpd.smtp import AuthResult, LoginPassword

    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"u", b"p")
    return AuthResult(success=ok, handled=False, auth_data=data)


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_tls_modes_deliver_over_tls(
    certificate: tuple[Path, Path], security: Security
) -> None:
    from aiosmtpd.controller import Controller

    cert, key = certificate
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    handler = _Collect()
    port = free_port()
    tls_args: dict[str, Any] = (
        {"tls_context": server_context, "require_starttls": True, "auth_required": True}
        if security == "starttls"
        # aiosmtpd does not count implicit TLS as TLS for auth_require_tls (and warns
        # when AUTH is required without it), though every byte here is encrypted.
        else {"ssl_context": server_context, "auth_require_tls": False}
    )
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        authenticator=_authenticator,
        ready_timeout=10,
        **tls_args,
    )
    # Implicit TLS: the controller's readiness probe cannot speak TLS; start anyway.
    controller.start()
    try:
        client_context = ssl.create_default_context(cafile=str(cert))
        notifier = EmailNotifier(
            host="127.0.0.1",
            port=port,
            username="u",
            password=SecretStr("p"),
            security=security,
            sender="remediator@example.test",
            timeout=5.0,
            tls_context=client_context,
            local_hostname="remediator.test",
        )
        record = samples.succeeded()
        await notifier.send(
            to=["oncall@example.test"],
            subject=email_subject(record),
            text=email_text(record),
            html=email_html(record),
        )
        assert handler.event.wait(10)
        assert handler.auth_users == ["u"]
        assert handler.messages[0]["Subject"] == email_subject(record)

        # A certificate nobody vouches for is a configuration problem: permanent.
        untrusting = EmailNotifier(
            host="127.0.0.1",
            port=port,
            security=security,
            sender="remediator@example.test",
            timeout=5.0,
            local_hostname="remediator.test",
        )
        with pytest.raises(PermanentError, match=r"(?i)certificate"):
            await untrusting.send(to=["a@example.test"], subject="s", text="t", html="h")
    finally:
        controller.stop()
