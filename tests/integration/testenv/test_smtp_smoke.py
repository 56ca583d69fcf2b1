"""The SMTP peer receives a mail sent with aiosmtplib over AUTH."""

from __future__ import annotations

from email.message import EmailMessage
from typing import Any

import aiosmtplib
import pytest

pytestmark = pytest.mark.integration


async def test_mail_with_auth_is_received(smtp_server: Any) -> None:
    smtp_server.clear()
    host, port = smtp_server.endpoints["smtp"].rsplit(":", 1)
    msg = EmailMessage()
    msg["From"] = "remediator@example.test"
    msg["To"] = "oncall@example.test"
    msg["Subject"] = "Rolled back checkout to revision 41"
    msg.set_content("HighErrorRate fired after the deploy; rolled back.")

    await aiosmtplib.send(
        msg,
        hostname=host,
        port=int(port),
        username=smtp_server.endpoints["smtp_user"],
        password=smtp_server.endpoints["smtp_password"],
        start_tls=False,
        use_tls=False,
    )

    [received] = smtp_server.wait_for_messages(1, timeout=10)
    assert received["Subject"] == "Rolled back checkout to revision 41"
    assert received.get_content().strip() == "HighErrorRate fired after the deploy; rolled back."
    assert smtp_server.deliveries[0].auth_user == smtp_server.endpoints["smtp_user"]
    assert smtp_server.deliveries[0].rcpt_tos == ["oncall@example.test"]


async def test_wrong_password_is_refused(smtp_server: Any) -> None:
    host, port = smtp_server.endpoints["smtp"].rsplit(":", 1)
    client = aiosmtplib.SMTP(hostname=host, port=int(port), start_tls=False, use_tls=False)
    await client.connect()
    try:
        with pytest.raises(aiosmtplib.SMTPAuthenticationError):
            await client.login(smtp_server.endpoints["smtp_user"], "wrong")
    finally:
        await client.quit()


async def test_auth_required_refuses_anonymous_mail(smtp_server: Any) -> None:
    host, port = smtp_server.endpoints["smtp"].rsplit(":", 1)
    msg = EmailMessage()
    msg["From"] = "remediator@example.test"
    msg["To"] = "oncall@example.test"
    msg["Subject"] = "anonymous"
    msg.set_content("x")
    smtp_server.auth_required = True
    try:
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as err:
            await aiosmtplib.send(msg, hostname=host, port=int(port), start_tls=False)
        assert err.value.code == 530
    finally:
        smtp_server.auth_required = False
