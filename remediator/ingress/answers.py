"""How the API answers: JSON bodies, and errors that say what was wrong and where."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

# Where error_response keeps its message, for the rejection log line.
ERROR_MESSAGE = web.ResponseKey("error_message", str)


def json_response(
    body: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


def error_response(
    status: int, message: str, *, headers: dict[str, str] | None = None
) -> web.Response:
    response = json_response({"error": message}, status=status, headers=headers)
    response[ERROR_MESSAGE] = message
    return response
