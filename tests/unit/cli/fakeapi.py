"""A stand-in for the daemon's HTTP API: answers what a test scripts, records what it got.

A real HTTP (or HTTPS) server on a loopback port, in a thread, so the CLI's real
urllib/ssl client is what is tested.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


Reply = tuple[int, dict[str, str], bytes]


def json_reply(status: int, document: Any, headers: dict[str, str] | None = None) -> Reply:
    return status, {"Content-Type": "application/json", **(headers or {})}, orjson.dumps(document)


def not_found(seen: Seen) -> Reply:
    return json_reply(404, {"error": "path: no such endpoint (see /api/v1/openapi.json)"})


class FakeApi:
    def __init__(self, server: ThreadingHTTPServer, *, scheme: str) -> None:
        self._server = server
        self.scheme = scheme
        self.seen: list[Seen] = []
        self.respond: Callable[[Seen], Reply] = not_found

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self._server.server_address[1]}"

    def record(self, seen: Seen) -> Reply:
        self.seen.append(seen)
        return self.respond(seen)


def _handler(fake: list[FakeApi]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            seen = Seen(
                method=self.command,
                path=parts.path,
                query=dict(parse_qsl(parts.query)),
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
            )
            status, headers, payload = fake[0].record(seen)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_POST = do_GET

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # e.g. a reply to a client that gave up waiting (the timeout test): its test
        # judges what the client saw; socketserver would print a traceback to stderr.
        pass


@contextmanager
def running(tls: ssl.SSLContext | None = None) -> Iterator[FakeApi]:
    holder: list[FakeApi] = []
    server = _Server(("127.0.0.1", 0), _handler(holder))
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    holder.append(FakeApi(server, scheme="https" if tls is not None else "http"))
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-api", daemon=True
    )
    thread.start()
    try:
        yield holder[0]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
