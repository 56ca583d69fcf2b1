"""The running daemon against its own OpenAPI document, with schemathesis (from PyPI).

Generated requests, valid and invalid, to every operation as a principal with the read
and operate roles (and the webhook as the ingest-only webhook credential): no answer is
a 5xx, and every answer (status, content type, headers, body) is one the document
describes. Bounded to about two minutes by a fixed number of examples per operation
and mode (no time limits: a slow machine must not turn into a failure).
"""

from __future__ import annotations

import ssl
import time
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.daemon import Daemon, principals_file
from tests.unit.cli.certs import make_pki

pytestmark = pytest.mark.e2e

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# About 4,800 requests: about a minute here, well within two on a slower machine.
EXAMPLES_PER_MODE = 300


def test_every_answer_fits_the_openapi_document_and_none_is_a_5xx(daemon: Daemon) -> None:
    schema = schemathesis.openapi.from_url(f"{daemon.url}/api/v1/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 18  # every route: the unit tests keep the document true
    started = time.monotonic()
    calls: dict[str, int] = {}
    for operation in operations:
        token = daemon.token if "webhooks" in operation.path else daemon.operator_token
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            exercise(daemon, operation, mode, token, calls)
    assert sum(calls.values()) >= len(operations) * 10, calls
    print(f"schemathesis: {sum(calls.values())} requests in {time.monotonic() - started:.0f}s")
    assert daemon.metric('remediator_internal_errors_total{component="http"}') == 0
    log = daemon.log_path.read_text()
    assert "Traceback" not in log and "internal error" not in log


def exercise(
    daemon: Daemon, operation: Any, mode: GenerationMode, token: str, calls: dict[str, int]
) -> None:
    """Up to EXAMPLES_PER_MODE generated requests; the first failing check raises."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_MODE,
        deadline=None,
        database=None,
        derandomize=True,  # the same examples on every run: a failure reproduces
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        case.call_and_validate(
            base_url=daemon.url,
            headers={"Authorization": f"Bearer {token}"},
            checks=CHECKS,
            timeout=10,
        )
        calls[operation.label] = calls.get(operation.label, 0) + 1

    try:
        run()
    except Unsatisfiable:
        # Nothing of it can be made invalid (no parameters, no body): e.g. GET /healthz.
        if mode is not GenerationMode.NEGATIVE:
            raise


def test_the_daemon_serves_https_with_client_certificates_from_its_settings(
    tmp_path: Path,
) -> None:
    """The settings reach the listener: TLS 1.2+, mTLS, a certificate names a principal."""
    (tmp_path / "pki").mkdir()
    pki = make_pki(tmp_path / "pki")
    client = ssl.create_default_context(cafile=str(pki.ca))
    client.load_cert_chain(pki.client_cert, pki.client_key)  # CN=operator
    workdir = tmp_path / "daemon"
    workdir.mkdir()
    principals = principals_file(
        workdir / "tls-principals.json",
        [{"name": "cert-operator", "roles": ["read", "operate"], "certificate_cns": ["operator"]}],
    )
    daemon = Daemon(
        workdir,
        client_tls=client,
        extra_env={
            "REMEDIATOR_HTTP__TLS_CERT_FILE": str(pki.server_cert),
            "REMEDIATOR_HTTP__TLS_KEY_FILE": str(pki.server_key),
            "REMEDIATOR_HTTP__TLS_CLIENT_CA_FILE": str(pki.ca),
            "REMEDIATOR_AUTH__PRINCIPALS_FILE": str(principals),
        },
    )
    daemon.start()
    try:
        # No token: the certificate is the credential.
        status, body = daemon.get("/api/v1/circuit", auth=False)
        assert (status, body["open"]) == (200, False)
        stranger = ssl.create_default_context(cafile=str(pki.ca))
        stranger.load_cert_chain(pki.stranger_cert, pki.stranger_key)
        daemon.client_tls = stranger
        with pytest.raises(OSError):  # refused in the handshake
            daemon.get("/healthz", auth=False)
        daemon.client_tls = client
        assert "remediator listening on https://127.0.0.1:" in daemon.log_path.read_text()
    finally:
        assert daemon.stop() == 0
