"""HTTPS with real handshakes, certificates made by the test: the server is verified by
default, --ca-file trusts a private CA, and a listener asking for client certificates
gets ours (and refuses one it does not know)."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.cli.certs import Pki
from tests.unit.cli.conftest import TOKEN, Cli
from tests.unit.cli.fakeapi import FakeApi, json_reply, running

CLOSED = {"open": False, "reason": None, "changed_at": None}


def server_context(pki: Pki, *, client_ca: Path | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(client_ca)
    return context


@pytest.fixture
def https(pki: Pki) -> Iterator[FakeApi]:
    with running(server_context(pki)) as fake:
        fake.respond = lambda seen: json_reply(200, CLOSED)
        yield fake


@pytest.fixture
def mtls(pki: Pki) -> Iterator[FakeApi]:
    with running(server_context(pki, client_ca=pki.ca)) as fake:
        fake.respond = lambda seen: json_reply(200, CLOSED)
        yield fake


def test_an_unknown_server_certificate_is_refused_by_default(
    cli: Cli, https: FakeApi, token_file: Path
) -> None:
    code, out, err = cli("circuit", "status", "--url", https.url, "--token-file", str(token_file))
    assert code == 2 and out == ""
    assert "TLS: cannot verify the certificate of" in err and "--ca-file" in err
    assert https.seen == []  # the token never left


def test_ca_file_trusts_the_private_ca(
    cli: Cli, https: FakeApi, token_file: Path, pki: Pki
) -> None:
    code, out, _ = cli(
        "circuit", "status", "--url", https.url, "--token-file", str(token_file),
        "--ca-file", str(pki.ca),
    )  # fmt: skip
    assert (code, out) == (0, "circuit breaker closed\n")
    assert https.seen[0].headers["authorization"] == f"Bearer {TOKEN}"


def test_the_ca_file_can_come_from_the_environment(
    cli: Cli, https: FakeApi, token_file: Path, pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REMEDIATOR_CA_FILE", str(pki.ca))
    code, _, _ = cli("circuit", "status", "--url", https.url, "--token-file", str(token_file))
    assert code == 0


def test_a_name_the_certificate_does_not_carry_is_refused(
    cli: Cli, https: FakeApi, token_file: Path, pki: Pki
) -> None:
    other_name = https.url.replace("127.0.0.1", "localhost")  # its only SAN is IP:127.0.0.1
    code, _, err = cli(
        "circuit", "status", "--url", other_name, "--ca-file", str(pki.ca),
        "--token-file", str(token_file),
    )  # fmt: skip
    assert code == 2
    assert "TLS: cannot verify the certificate" in err and "mismatch" in err
    assert https.seen == []


def test_mtls_with_our_client_certificate(cli: Cli, mtls: FakeApi, pki: Pki) -> None:
    code, out, _ = cli(
        "circuit", "status", "--url", mtls.url, "--ca-file", str(pki.ca),
        "--client-cert", str(pki.client_cert), "--client-key", str(pki.client_key),
    )  # fmt: skip
    assert (code, out) == (0, "circuit breaker closed\n")
    assert "authorization" not in mtls.seen[0].headers  # the certificate is the credential


@pytest.mark.parametrize("who", ["nobody", "stranger"])
def test_mtls_refuses_no_or_an_unknown_client_certificate(
    who: str, cli: Cli, mtls: FakeApi, pki: Pki
) -> None:
    client = (
        [] if who == "nobody"
        else ["--client-cert", str(pki.stranger_cert), "--client-key", str(pki.stranger_key)]
    )  # fmt: skip
    code, out, err = cli("circuit", "status", "--url", mtls.url, "--ca-file", str(pki.ca), *client)
    assert out == "" and mtls.seen == []
    # The server refuses in the handshake; the client sees its alert, or, racing it, a
    # closed connection. Either way: no answer, one line, no success.
    assert code in (2, 3), err
    assert err.startswith(("remediator: TLS handshake with", "remediator: cannot reach")), err
    assert "Traceback" not in err and err.count("\n") == 1


@pytest.mark.parametrize("flag", ["--ca-file", "--client-cert"])
def test_unreadable_tls_files_name_the_flag(
    flag: str, cli: Cli, https: FakeApi, tmp_path: Path, pki: Pki
) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    extra = ["--ca-file", str(pki.ca)] if flag == "--client-cert" else []
    code, _, err = cli("circuit", "status", "--url", https.url, *extra, flag, str(garbage))
    assert code == 2
    assert f"{flag} {garbage}: cannot load" in err
    assert https.seen == []
