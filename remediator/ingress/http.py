"""The aiohttp application: webhook intake, read API, health, metrics, OpenAPI."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from remediator.domain.errors import InvalidInput, TemporaryError
from remediator.domain.limits import InputLimits, TooLarge
from remediator.domain.paging import parse_cursor, shown
from remediator.domain.record import CONTENT_TYPES, RECORD_FORMATS, render
from remediator.domain.record_build import record_from_journal
from remediator.domain.signals import Status
from remediator.ingress.alertmanager import parse_payload, to_signals
from remediator.ingress.openapi import openapi_document
from remediator.ingress.throttled_log import ThrottledWarnings
from remediator.metrics import Metrics
from remediator.ports import CircuitRecord, Journal

log = logging.getLogger(__name__)

MAX_PAGE = 1000
MAX_APPROVER_CHARS = 200
READY_PROBE_TIMEOUT = 3.0
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Where error_response keeps its message, for the rejection log line.
ERROR_MESSAGE = web.ResponseKey("error_message", str)
# Statuses that are ordinary answers (no such id, not awaiting approval), not mistakes
# worth a log line; every 4xx is still counted.
_QUIET_STATUSES = frozenset({404, 409})
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
_LIMIT_TEXT = re.compile(r"[0-9]{1,4}")


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthConfig:
    """Credentials webhook and API callers must present (either one will do)."""

    bearer_token: str | None = field(default=None, repr=False)  # secrets stay out of reprs
    basic_user: str | None = None
    basic_password: str | None = field(default=None, repr=False)

    @property
    def enabled(self) -> bool:
        return self.bearer_token is not None or self.basic_user is not None

    def challenge(self) -> str:
        schemes = []
        if self.bearer_token is not None:
            schemes.append('Bearer realm="remediator"')
        if self.basic_user is not None:
            schemes.append('Basic realm="remediator"')
        return ", ".join(schemes)

    def accepts(self, header: str | None) -> bool:
        if not self.enabled:
            return True
        if not header:
            return False
        try:
            # aiohttp decodes header bytes as UTF-8 with surrogateescape; this gives the
            # bytes back, so a header holding any bytes is compared, never an error.
            raw = header.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            return False
        scheme, _, credentials = raw.partition(b" ")
        scheme = scheme.lower()
        credentials = credentials.strip()
        if scheme == b"bearer" and self.bearer_token is not None:
            return hmac.compare_digest(credentials, self.bearer_token.encode())
        if scheme == b"basic" and self.basic_user is not None and self.basic_password is not None:
            try:
                decoded = base64.b64decode(credentials, validate=True)
            except (binascii.Error, ValueError):
                return False
            user, sep, password = decoded.partition(b":")
            # Both comparisons always run, so timing doesn't tell which part was wrong.
            user_ok = hmac.compare_digest(user, self.basic_user.encode())
            password_ok = hmac.compare_digest(password, self.basic_password.encode())
            return bool(sep) and user_ok and password_ok
        return False


class ServerLog:
    """The log aiohttp's request handler writes to (``handler_args={"logger": ...}``).

    aiohttp logs a request it cannot parse (request line, header bytes, chunking, content
    encoding: the client's mistake) at ERROR with a traceback. Those become a count and
    one throttled WARNING line; anything else is logged as aiohttp would.
    """

    def __init__(self, *, warnings: ThrottledWarnings, on_malformed: Callable[[int], None]):
        self._logger = logging.getLogger("aiohttp.server")
        self._warnings = warnings
        self._on_malformed = on_malformed

    def debug(self, msg: object, *args: object, **kwargs: Any) -> None:
        self._logger.debug(msg, *args, **kwargs)

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        fault = _client_fault(exc_info)
        if fault is None:
            self._logger.exception(msg, *args, exc_info=exc_info, **kwargs)
            return
        if not str(msg).startswith("Error handling request"):
            # Raised again while aiohttp drains a body we already answered (and counted).
            self._logger.debug(msg, *args, exc_info=exc_info, **kwargs)
            return
        self._on_malformed(fault.code)
        self._warnings.warning(
            ("malformed", fault.code), "%s: malformed request answered %d (%s: %s)",
            str(msg) % args, fault.code, type(fault).__name__, _first_line(fault),
        )  # fmt: skip


def _client_fault(exc_info: Any) -> HttpProcessingError | None:
    """The client-side HTTP error (4xx) in an exception's chain, if there is one."""
    exc = exc_info if isinstance(exc_info, BaseException) else None
    seen = 0
    while exc is not None and seen < 5:
        if isinstance(exc, HttpProcessingError) and 400 <= exc.code < 500:
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


class IntakeState:
    """Shared between the app and the runtime's drain sequence."""

    def __init__(self) -> None:
        self.draining = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()


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


class IntakeApp:
    def __init__(
        self,
        *,
        journal: Journal,
        metrics: Metrics,
        auth: AuthConfig,
        state: IntakeState,
        service_labels: Sequence[str],
        namespace_labels: Sequence[str],
        body_limit_bytes: int,
        retry_after_seconds: int,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_new_signals: Callable[[], None] | None = None,
        readiness_details: Callable[[], dict[str, str]] = dict,
        on_approved: Callable[[], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        input_limits: InputLimits | None = None,
    ) -> None:
        self.journal = journal
        self.metrics = metrics
        metrics.journal_writer_up.set_function(lambda: float(journal.alive()))
        self.auth = auth
        self.state = state
        self.service_labels = tuple(service_labels)
        self.namespace_labels = tuple(namespace_labels)
        self.body_limit_bytes = body_limit_bytes
        self.input_limits = input_limits or InputLimits()
        self.retry_after = str(retry_after_seconds)
        self.clock = clock
        self.on_new_signals = on_new_signals
        self.readiness_details = readiness_details
        self.on_approved = on_approved
        self._rejections = ThrottledWarnings(log, monotonic=monotonic)
        self._server_log = ServerLog(
            warnings=self._rejections,
            on_malformed=lambda code: self.metrics.http_rejected.labels(
                route="malformed", code=str(code)
            ).inc(),
        )

    def build(self) -> web.Application:
        app = web.Application(
            client_max_size=self.body_limit_bytes,
            middlewares=[self._contain],
            handler_args={"logger": self._server_log},
        )
        app.router.add_post("/api/v1/webhooks/alertmanager", self.alertmanager_webhook)
        app.router.add_get("/api/v1/signals", self._authenticated(self.list_signals))
        app.router.add_get("/api/v1/remediations", self._authenticated(self.list_remediations))
        app.router.add_get("/api/v1/remediations/{id}", self._authenticated(self.get_remediation))
        app.router.add_get("/api/v1/remediations/{id}/record", self._authenticated(self.get_record))
        app.router.add_post("/api/v1/remediations/{id}/approve", self._authenticated(self.approve))
        app.router.add_get("/api/v1/circuit", self._authenticated(self.get_circuit))
        app.router.add_post("/api/v1/circuit/reset", self._authenticated(self.reset_circuit))
        app.router.add_get("/api/v1/openapi.json", self.openapi)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics_endpoint)
        return app

    # -- errors --------------------------------------------------------------------
    @web.middleware
    async def _contain(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Every answer to a client's mistake is a 4xx naming the field; anything
        unexpected is a 500 with an error id, never a traceback per request."""
        try:
            response = await handler(request)
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            response = self._error_answer(request, exc)
        if 400 <= response.status < 500:
            self._observe_rejection(request, response)
        return response

    def _error_answer(self, request: web.Request, exc: Exception) -> web.Response:
        if isinstance(exc, InvalidInput):
            return error_response(400, str(exc))
        if isinstance(exc, web.HTTPException):
            return self._from_http_exception(exc)
        if isinstance(exc, web.RequestPayloadError):  # e.g. a gzip body that isn't gzip
            return error_response(400, f"body: cannot be read ({_first_line(exc)})")
        return self._internal_error(request, exc)

    def _from_http_exception(self, exc: web.HTTPException) -> web.Response:
        """aiohttp's own answers (unknown path, wrong method, body too large) as JSON."""
        if exc.status == 413:
            message = f"body: larger than the limit of {self.body_limit_bytes} bytes"
        elif exc.status == 404:
            message = "path: no such endpoint (see /api/v1/openapi.json)"
        else:
            message = exc.reason
        kept = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return error_response(exc.status, message, headers=kept)

    def _internal_error(self, request: web.Request, exc: Exception) -> web.Response:
        error_id = secrets.token_hex(6)
        # One line: the type only (a message may carry data we must not log); the
        # traceback at DEBUG for whoever chases the error id.
        log.error("internal error %s answering %s %s: %s", error_id, request.method,
                  _route(request), type(exc).__name__)  # fmt: skip
        log.debug("internal error %s", error_id, exc_info=exc)
        self.metrics.internal_errors.labels(component="http").inc()
        return json_response(
            {"error": f"internal error {error_id}: see the server log", "error_id": error_id},
            status=500,
        )

    def _observe_rejection(self, request: web.Request, response: web.StreamResponse) -> None:
        route = _route(request)
        self.metrics.http_rejected.labels(route=route, code=str(response.status)).inc()
        if response.status in _QUIET_STATUSES:
            return
        message = response.get(ERROR_MESSAGE, "")[:300]
        self._rejections.warning(
            (route, response.status), "rejected %s %s from %s with %d: %s",
            request.method, route, request.remote, response.status, message,
        )  # fmt: skip

    def _unavailable(self, reason: str) -> web.Response:
        return error_response(503, reason, headers={"Retry-After": self.retry_after})

    def _unauthorized(self) -> web.Response:
        return error_response(
            401, "missing or wrong credentials", headers={"WWW-Authenticate": self.auth.challenge()}
        )

    def _authenticated(self, handler: Handler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            if not self.auth.accepts(request.headers.get("Authorization")):
                return self._unauthorized()
            return await handler(request)

        return guarded

    # -- intake --------------------------------------------------------------------
    async def alertmanager_webhook(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        self.state.enter()
        try:
            response = await self._handle_alertmanager(request)
        except Exception as exc:  # noqa: BLE001 - e.g. 413 from the body limit; counted below
            response = self._error_answer(request, exc)
        finally:
            self.state.leave()
        self.metrics.webhook_requests.labels(code=str(response.status)).inc()
        self.metrics.request_duration.observe(time.perf_counter() - started)
        return response

    async def _handle_alertmanager(self, request: web.Request) -> web.Response:
        if self.state.draining:
            return self._unavailable("draining: shutting down, retry against another replica")
        if not self.auth.accepts(request.headers.get("Authorization")):
            return self._unauthorized()
        body = await request.read()
        try:
            payload = parse_payload(body, limits=self.input_limits)
        except InvalidInput as exc:  # logged (throttled) and counted by _contain
            return error_response(413 if isinstance(exc, TooLarge) else 400, str(exc))
        if payload.truncatedAlerts > 0:
            self.metrics.alerts_truncated.inc(payload.truncatedAlerts)
            log.warning(
                "Alertmanager receiver %r truncated %d alert(s) of group %s: raise max_alerts",
                payload.receiver,
                payload.truncatedAlerts,
                payload.groupKey,
            )
        signals = to_signals(
            payload,
            received_at=self.clock(),
            service_labels=self.service_labels,
            namespace_labels=self.namespace_labels,
        )
        write_started = time.perf_counter()
        try:
            results = await self.journal.record_signals(signals)
        except TemporaryError as exc:
            log.error("journal unavailable, answering 503: %s", exc)
            return self._unavailable(f"journal unavailable: {exc}")
        self.metrics.journal_write_duration.observe(time.perf_counter() - write_started)

        duplicates = 0
        unroutable: list[str] = []
        for signal, result in zip(signals, results, strict=True):
            if result.duplicate:
                duplicates += 1
                continue
            self.metrics.alerts_received.labels(status=signal.status.value).inc()
            if not signal.routable:
                unroutable.append(signal.kind or "<no alertname>")
        if duplicates:
            self.metrics.alerts_duplicate.inc(duplicates)
        if unroutable:
            self.metrics.alerts_unroutable.inc(len(unroutable))
            log.warning(
                "journaled %d unroutable alert(s) (no label among %s), e.g. %s",
                len(unroutable),
                ", ".join(self.service_labels),
                unroutable[0],
            )
        accepted = len(signals) - duplicates
        if accepted and self.on_new_signals is not None:
            self.on_new_signals()
        firing = sum(1 for s in signals if s.status is Status.FIRING)
        log.debug(
            "receiver=%s group=%s alerts=%d firing=%d accepted=%d duplicates=%d",
            payload.receiver, payload.groupKey, len(signals), firing, accepted, duplicates,
        )  # fmt: skip
        return json_response(
            {
                "accepted": accepted,
                "duplicates": duplicates,
                "signal_ids": [r.signal_id for r in results],
            }
        )

    # -- read API ------------------------------------------------------------------
    async def list_signals(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        limit, cursor = _limit(query), _cursor(query)
        try:
            page = await self.journal.list_signals(
                service=_text(query, "service"), limit=limit, cursor=cursor
            )
        except TemporaryError as exc:
            return self._unavailable(f"journal unavailable: {exc}")
        return json_response({"items": list(page.items), "next": page.next_cursor})

    async def list_remediations(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        limit, cursor = _limit(query), _cursor(query)
        status = query.get("status") or None
        if status is not None and status not in REMEDIATION_STATUSES:
            raise InvalidInput(
                f"must be one of {', '.join(REMEDIATION_STATUSES)}, got {shown(status)}",
                where="status",
            )
        try:
            page = await self.journal.list_remediations(
                service=_text(query, "service"), status=status, limit=limit, cursor=cursor
            )
        except TemporaryError as exc:
            return self._unavailable(f"journal unavailable: {exc}")
        return json_response({"items": list(page.items), "next": page.next_cursor})

    async def get_remediation(self, request: web.Request) -> web.StreamResponse:
        rid = request.match_info["id"]
        try:
            item = await self.journal.get_remediation(rid)
        except TemporaryError as exc:
            return self._unavailable(f"journal unavailable: {exc}")
        if item is None:
            return error_response(404, f"id: no remediation {shown(rid)}")
        return json_response(item)

    async def get_record(self, request: web.Request) -> web.StreamResponse:
        """The rollback record (plan §3.11) as Markdown, HTML or JSON."""
        rid = request.match_info["id"]
        fmt = request.query.get("format", "md")
        if fmt not in RECORD_FORMATS:
            raise InvalidInput(
                f"must be one of {', '.join(RECORD_FORMATS)}, got {shown(fmt)}", where="format"
            )
        try:
            item = await self.journal.get_remediation(rid)
            signal = await self.journal.get_signal(item["signal_id"]) if item else None
        except TemporaryError as exc:
            return self._unavailable(f"journal unavailable: {exc}")
        if item is None:
            return error_response(404, f"id: no remediation {shown(rid)}")
        record = record_from_journal(item, signal)
        body = render(record, fmt=fmt, record_url=str(request.url))
        headers = {"Content-Type": CONTENT_TYPES[fmt]}
        if fmt == "html":
            # No scripts and every value escaped; the policy is a second line of defence.
            headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
        return web.Response(text=body, headers=headers)

    async def approve(self, request: web.Request) -> web.StreamResponse:
        """Approve a plan whose rule requires approval: it becomes runnable."""
        rid = request.match_info["id"]
        by = _approver(await request.read())
        try:
            approved = await self.journal.approve_remediation(rid, by=by, at=self.clock())
            item = await self.journal.get_remediation(rid)
        except TemporaryError as exc:
            return self._unavailable(f"journal unavailable: {exc}")
        if item is None:
            return error_response(404, f"id: no remediation {shown(rid)}")
        if not approved:
            return error_response(409, f"id: {rid} is {item['status']}, not awaiting approval")
        log.warning("remediation %s approved by %s via the API", rid, by)
        if self.on_approved is not None:
            self.on_approved()
        return json_response(item)

    async def get_circuit(self, request: web.Request) -> web.StreamResponse:
        try:
            record = await self.journal.circuit()
        except TemporaryError as exc:
            return self._unavailable(f"journal unavailable: {exc}")
        return json_response(_circuit_body(record))

    async def reset_circuit(self, request: web.Request) -> web.StreamResponse:
        """Close the breaker; automated actions before now no longer count toward it."""
        try:
            await self.journal.set_circuit(open=False, reason=None, at=self.clock())
            record = await self.journal.circuit()
        except TemporaryError as exc:
            return self._unavailable(f"journal unavailable: {exc}")
        log.warning("circuit breaker reset through the API by %s", request.remote)
        return json_response(_circuit_body(record))

    # -- operations ----------------------------------------------------------------
    async def healthz(self, request: web.Request) -> web.StreamResponse:
        # Liveness fails only for what a restart cures: a journal that can no longer
        # write (draining or a busy disk are readiness matters).
        if not self.journal.alive():
            return json_response(
                {"status": "unavailable", "checks": {"journal": "writer stopped; restart needed"}},
                status=503,
            )
        return json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.StreamResponse:
        if self.state.draining:
            return self._unavailable("draining")
        try:
            async with asyncio.timeout(READY_PROBE_TIMEOUT):
                await self.journal.check_writable()
        except (TemporaryError, TimeoutError) as exc:
            why = str(exc) or f"no answer within {READY_PROBE_TIMEOUT:g}s"
            return json_response(
                {"status": "unavailable", "checks": {"journal": f"not writable: {why}"}},
                status=503,
                headers={"Retry-After": self.retry_after},
            )
        # Details (e.g. no cluster: plans are dry runs) inform; only the journal gates.
        checks = {"journal": "writable", **self.readiness_details()}
        return json_response({"status": "ok", "checks": checks})

    async def metrics_endpoint(self, request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=generate_latest(self.metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )

    async def openapi(self, request: web.Request) -> web.StreamResponse:
        return json_response(openapi_document())


REMEDIATION_STATUSES = (
    "planned", "awaiting_approval", "dry-run", "skipped", "running", "succeeded", "failed",
    "needs_human",
)  # fmt: skip


def _limit(query: Mapping[str, str]) -> int:
    text = query.get("limit", "50")
    # ASCII digits only: int() would also take " 5", "5_0" and "٣".
    if _LIMIT_TEXT.fullmatch(text) is None:
        raise InvalidInput(f"expected an integer, got {shown(text)}", where="limit")
    limit = int(text)
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"must be between 1 and {MAX_PAGE}, got {limit}", where="limit")
    return limit


def _cursor(query: Mapping[str, str]) -> str | None:
    text = query.get("cursor")
    if text is not None:
        parse_cursor(text)  # checked here, so the journal never sees one it can't use
    return text


def _text(query: Mapping[str, str], name: str) -> str | None:
    """An optional free-text filter; control characters are never in a stored value."""
    value = query.get(name) or None
    if value is not None and _CONTROL_CHARACTERS.search(value):
        raise InvalidInput(f"holds control characters: {shown(value)}", where=name)
    return value


def _approver(body: bytes) -> str:
    """Who approves, from the approve body; ``InvalidInput`` naming the field otherwise."""
    try:
        document = orjson.loads(body or b"{}")
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"not valid JSON ({exc})", where="body") from None
    if not isinstance(document, dict):
        raise InvalidInput('expected a JSON object such as {"by": "alice"}', where="body")
    by = document.get("by")
    if not isinstance(by, str) or not by.strip():
        raise InvalidInput('name who approves (e.g. {"by": "alice"})', where="by")
    by = by.strip()
    if len(by) > MAX_APPROVER_CHARS or _CONTROL_CHARACTERS.search(by):
        raise InvalidInput(
            f"at most {MAX_APPROVER_CHARS} characters, no control characters: {shown(by)}",
            where="by",
        )
    return by


def _first_line(exc: BaseException) -> str:
    """A short description of an aiohttp parsing error: its cause's first line."""
    cause = exc.__cause__ or exc
    text = str(getattr(cause, "message", "") or cause).strip()
    return text.splitlines()[0][:200] if text else type(cause).__name__


def _route(request: web.Request) -> str:
    """The route's template (bounded, for metric labels), not the path asked for."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def _circuit_body(record: CircuitRecord) -> dict[str, Any]:
    return {
        "open": record.open,
        "reason": record.reason,
        "changed_at": record.changed_at.isoformat() if record.changed_at else None,
    }
