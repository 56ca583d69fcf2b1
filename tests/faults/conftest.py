"""Fixtures for the fault-injection suite: the daemon as a real process, real peers,
and small stand-ins for what a fault needs (a health endpoint that hangs)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import pytest_runtest_makereport  # noqa: F401 - failing tests show logs
from tests.integration.testenv.test_kube_smoke import api, namespace

__all__ = ["HealthEndpoint", "api", "namespace"]


class HealthEndpoint:
    """A service's health URL that hangs (answers nothing) until told to answer 200."""

    def __init__(self) -> None:
        self.healthy = threading.Event()
        self.closing = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                while not outer.healthy.is_set():
                    if outer.closing.wait(0.05):
                        return
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/healthz"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def health_endpoint() -> Iterator[HealthEndpoint]:
    endpoint = HealthEndpoint()
    yield endpoint
    endpoint.close()
