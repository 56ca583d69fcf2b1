"""A stand-in application for the end-to-end story: it serves the request counters a
real service would, with an error rate the test controls.

``GET /metrics`` answers ``http_requests_total{service, namespace, code}`` (Prometheus
text format) for a steady 100 requests/s, of which the share ``error_rate`` failed with
500; the counters advance with the time between scrapes, so ``rate()`` over them is
exactly that share. ``POST /error-rate?value=0.5`` sets the share; ``GET /healthz`` is 200 while the
share is at most 5 %, else 503. Standard library
only: it runs as its own process (``python -m tests.storyapp --port P --service S
--namespace N``), like the service it stands for.
"""

from __future__ import annotations

import argparse
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REQUESTS_PER_SECOND = 100.0


class Traffic:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._error_rate = 0.0
        self._ok = 0.0
        self._failed = 0.0
        self._at = time.monotonic()

    def _advance(self) -> None:
        now = time.monotonic()
        served = (now - self._at) * REQUESTS_PER_SECOND
        self._at = now
        self._failed += served * self._error_rate
        self._ok += served * (1 - self._error_rate)

    def set_error_rate(self, value: float) -> None:
        with self._lock:
            self._advance()  # what was served so far keeps the old share
            self._error_rate = value

    @property
    def healthy(self) -> bool:
        with self._lock:
            return self._error_rate <= 0.05

    def counters(self) -> tuple[float, float]:
        with self._lock:
            self._advance()
            return self._ok, self._failed


def make_handler(traffic: Traffic, *, service: str, namespace: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/healthz":
                self._answer(200, "ok\n") if traffic.healthy else self._answer(503, "failing\n")
                return
            if self.path != "/metrics":
                self._answer(404, "not found\n")
                return
            ok, failed = traffic.counters()
            labels = f'service="{service}",namespace="{namespace}"'
            self._answer(
                200,
                "# HELP http_requests_total Requests served, by status code.\n"
                "# TYPE http_requests_total counter\n"
                f'http_requests_total{{{labels},code="200"}} {ok:.3f}\n'
                f'http_requests_total{{{labels},code="500"}} {failed:.3f}\n',
                content_type="text/plain; version=0.0.4",
            )

        def do_POST(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            values = urllib.parse.parse_qs(url.query).get("value", [])
            if url.path != "/error-rate" or len(values) != 1:
                self._answer(400, "POST /error-rate?value=<0..1>\n")
                return
            try:
                value = float(values[0])
            except ValueError:
                value = -1.0
            if not 0.0 <= value <= 1.0:
                self._answer(400, "value: a number from 0 to 1\n")
                return
            traffic.set_error_rate(value)
            self._answer(200, f"error rate {value}\n")

        def _answer(self, status: int, text: str, content_type: str = "text/plain") -> None:
            body = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # scrapes every second would drown the test's log

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--service", required=True)
    parser.add_argument("--namespace", required=True)
    args = parser.parse_args()
    handler = make_handler(Traffic(), service=args.service, namespace=args.namespace)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    server.serve_forever()


if __name__ == "__main__":
    main()
