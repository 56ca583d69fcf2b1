"""HTTPS and mTLS on the listener, with certificates made at test time and real handshakes."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from remediator.domain.auth import Role
from remediator.domain.errors import ConfigError
from remediator.ingress.auth import Authenticator, WebhookCredential
from remediator.ingress.http import IntakeApp, IntakeState
from remediator.journal.sqlite import SqliteJournal
from remediator.metrics import Metrics
from remediator.runtime import server_ssl_context
from remediator.settings import HttpSettings
from tests.unit.auth_helpers import OPERATOR_TOKEN, bearer, principal
from tests.unit.cli.certs import Pki, make_pki


def openssl(*args: str, cwd: Path) -> str:
    result = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"openssl {args}: {result.stderr}"
    return result.stdout


def client_certificate(directory: Path, name: str, subject: str) -> tuple[Path, Path, str]:
    """A client certificate the test CA signs; its subject as openssl prints it (RFC 2253)."""
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=directory)  # fmt: skip
    (directory / f"{name}.ext").write_text(
        "basicConstraints=critical,CA:FALSE\nextendedKeyUsage=clientAuth\n"
    )
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext",
            cwd=directory)  # fmt: skip
    printed = openssl("x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in", f"{name}.crt",
                      cwd=directory)  # fmt: skip
    return directory / f"{name}.crt", directory / f"{name}.key", printed.strip().split("=", 1)[1]


@dataclass
class Certs:
    pki: Pki
    alice_cert: Path
    alice_key: Path
    alice_subject: str  # as `openssl x509 -subject -nameopt RFC2253` prints it
    visitor_cert: Path  # signed by the trusted CA, but no principal's
    visitor_key: Path


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    directory = tmp_path_factory.mktemp("pki")
    pki = make_pki(directory)
    alice_cert, alice_key, subject = client_certificate(
        directory, "alice", "/O=Example, Inc./OU=sre/CN=alice"
    )
    visitor_cert, visitor_key, _ = client_certificate(directory, "visitor", "/CN=visitor")
    return Certs(pki, alice_cert, alice_key, subject, visitor_cert, visitor_key)


@dataclass
class Listener:
    url: str
    metrics: Metrics
    journal: SqliteJournal


Serve = Callable[..., Awaitable[Listener]]


@pytest.fixture
async def serve(tmp_path: Path, certs: Certs) -> AsyncIterator[Serve]:
    runners: list[tuple[web.AppRunner, SqliteJournal]] = []

    async def start(*, client_ca: bool) -> Listener:
        settings = HttpSettings(
            tls_cert_file=certs.pki.server_cert,
            tls_key_file=certs.pki.server_key,
            tls_client_ca_file=certs.pki.ca if client_ca else None,
        )
        context = server_ssl_context(settings)
        journal = SqliteJournal(path=tmp_path / f"j{len(runners)}.db")
        await journal.open()
        metrics = Metrics()
        auth = Authenticator(
            principals=[
                principal("ops", Role.READ, Role.OPERATE, token=OPERATOR_TOKEN),
                principal("alice", Role.READ, Role.OPERATE, subjects=[certs.alice_subject]),
                principal("grafana", Role.READ, cns=["operator"]),  # make_pki's client: CN=operator
            ],
            webhook=WebhookCredential(bearer_token="hook-token"),
        )
        intake = IntakeApp(journal=journal, metrics=metrics, auth=auth, state=IntakeState(),
                           service_labels=("service",), namespace_labels=("namespace",),
                           body_limit_bytes=65536, retry_after_seconds=1)  # fmt: skip
        runner = web.AppRunner(intake.build(), handle_signals=False)
        await runner.setup()
        runners.append((runner, journal))
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
        return Listener(f"https://127.0.0.1:{port}", metrics, journal)

    yield start
    for runner, journal in runners:
        await runner.cleanup()
        await journal.close()


def client_context(
    certs: Certs, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs.pki.ca))
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


async def get(
    url: str, context: ssl.SSLContext, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, object]]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, ssl=context, headers=headers or {}) as resp,
    ):
        return resp.status, await resp.json()


async def test_https_serves_and_tokens_work_over_it(serve: Serve, certs: Certs) -> None:
    listener = await serve(client_ca=False)
    context = client_context(certs)
    assert await get(f"{listener.url}/healthz", context) == (200, {"status": "ok"})
    status, body = await get(f"{listener.url}/api/v1/circuit", context, bearer(OPERATOR_TOKEN))
    assert status == 200 and body["open"] is False
    status, _ = await get(f"{listener.url}/api/v1/circuit", context)
    assert status == 401


async def test_plain_http_to_the_tls_port_gets_no_answer(serve: Serve) -> None:
    listener = await serve(client_ca=False)
    host, port = listener.url.removeprefix("https://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    await writer.drain()
    try:
        answer = await asyncio.wait_for(reader.read(), timeout=10)
    except ConnectionResetError:
        answer = b""
    finally:
        writer.close()
    assert not answer.startswith(b"HTTP/")  # at most a TLS alert, never an HTTP answer


@pytest.mark.parametrize("who", ["no certificate", "another CA's certificate"])
async def test_mtls_refuses_an_unknown_client_in_the_handshake(
    serve: Serve, certs: Certs, who: str
) -> None:
    listener = await serve(client_ca=True)
    if who == "no certificate":
        context = client_context(certs)
    else:
        context = client_context(certs, certs.pki.stranger_cert, certs.pki.stranger_key)
    with pytest.raises(aiohttp.ClientError):
        # Even with a good token: the connection never gets as far as HTTP.
        await get(f"{listener.url}/healthz", context, bearer(OPERATOR_TOKEN))
    # The application never saw a request.
    assert (
        listener.metrics.registry.get_sample_value(
            "remediator_auth_failures_total", {"reason": "missing"}
        )
        is None
    )
    assert (
        listener.metrics.registry.get_sample_value(
            "remediator_http_rejected_total", {"route": "/healthz", "code": "401"}
        )
        is None
    )


async def test_mtls_maps_a_known_certificate_to_its_principal_and_roles(
    serve: Serve, certs: Certs
) -> None:
    listener = await serve(client_ca=True)
    alice = client_context(certs, certs.alice_cert, certs.alice_key)
    assert certs.alice_subject == "CN=alice,OU=sre,O=Example\\, Inc."
    status, body = await get(f"{listener.url}/api/v1/circuit/reset", alice, method="POST")
    assert status == 200 and body["changed_by"] == "alice"
    # By common name: read only.
    grafana = client_context(certs, certs.pki.client_cert, certs.pki.client_key)
    assert (await get(f"{listener.url}/api/v1/circuit", grafana))[0] == 200
    status, body = await get(f"{listener.url}/api/v1/circuit/reset", grafana, method="POST")
    assert (status, body) == (
        403, {"error": "forbidden: role 'operate' required (principal 'grafana' has: read)"}
    )  # fmt: skip
    # Signed by the CA, but nobody's: the handshake passes, the request is 401...
    visitor = client_context(certs, certs.visitor_cert, certs.visitor_key)
    assert (await get(f"{listener.url}/api/v1/circuit", visitor))[0] == 401
    assert (await get(f"{listener.url}/healthz", visitor))[0] == 200
    # ... unless it sends a principal's token: the header decides.
    status, body = await get(f"{listener.url}/api/v1/circuit/reset", visitor,
                             bearer(OPERATOR_TOKEN), method="POST")  # fmt: skip
    assert status == 200 and body["changed_by"] == "ops"


def test_the_listener_asks_for_tls_1_2_or_later(certs: Certs) -> None:
    context = server_ssl_context(
        HttpSettings(tls_cert_file=certs.pki.server_cert, tls_key_file=certs.pki.server_key)
    )
    assert context is not None
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert context.verify_mode is ssl.CERT_NONE  # no client CA: no client certificates
    assert server_ssl_context(HttpSettings()) is None


def test_unusable_tls_files_are_config_errors_naming_the_setting(
    certs: Certs, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"http\.tls_cert_file .* cannot load them"):
        server_ssl_context(
            HttpSettings(tls_cert_file=certs.pki.server_cert, tls_key_file=certs.pki.client_key)
        )
    with pytest.raises(ConfigError, match="No such file"):
        server_ssl_context(
            HttpSettings(tls_cert_file=tmp_path / "none.crt", tls_key_file=tmp_path / "none.key")
        )
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"http\.tls_client_ca_file .* cannot load it") as caught:
        server_ssl_context(
            HttpSettings(
                tls_cert_file=certs.pki.server_cert,
                tls_key_file=certs.pki.server_key,
                tls_client_ca_file=garbage,
            )
        )
    assert "not a certificate" not in str(caught.value)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"tls_cert_file": "a.crt"}, "tls_cert_file and tls_key_file must be set together"),
        ({"tls_key_file": "a.key"}, "tls_cert_file and tls_key_file must be set together"),
        ({"tls_client_ca_file": "ca.crt"}, "tls_client_ca_file needs tls_cert_file"),
    ],
)
def test_incomplete_tls_settings_are_refused(fields: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HttpSettings(**fields)  # type: ignore[arg-type]
