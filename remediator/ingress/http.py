"""The aiohttp application: webhook intake, read API, health, metrics, OpenAPI."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from remediator.domain.errors import InvalidInput, PermanentError, TemporaryError
from remediator.domain.record import CONTENT_TYPES, RECORD_FORMATS, render
from remediator.domain.record_build import record_from_journal
from remediator.domain.signals import Status
from remediator.ingress.alertmanager import parse_payload, to_signals
from remediator.ingress.openapi import openapi_document
from remediator.metrics import Metrics
from remediator.ports import CircuitRecord, Journal

log = logging.getLogger(__name__)

MAX_PAGE = 1000
READY_PROBE_TIMEOUT = 3.0
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthConfig:
    """Credentials webhook and API callers must present (either one will do)."""

    bearer_token: str | None = None
    basic_user: str | None = None
    basic_password: str | None = None

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
        scheme, _, credentials = header.partition(" ")
        scheme = scheme.lower()
        credentials = credentials.strip()
        if scheme == "bearer" and self.bearer_token is not None:
            return hmac.compare_digest(credentials.encode(), self.bearer_token.encode())
        if scheme == "basic" and self.basic_user is not None and self.basic_password is not None:
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
    return json_response({"error": message}, status=status, headers=headers)


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
    ) -> None:
        self.journal = journal
        self.metrics = metrics
        metrics.journal_writer_up.set_function(lambda: float(journal.alive()))
        self.auth = auth
        self.state = state
        self.service_labels = tuple(service_labels)
        self.namespace_labels = tuple(namespace_labels)
        self.body_limit_bytes = body_limit_bytes
        self.retry_after = str(retry_after_seconds)
        self.clock = clock
        self.on_new_signals = on_new_signals
        self.readiness_details = readiness_details
        self.on_approved = on_approved

    def build(self) -> web.Application:
        app = web.Application(client_max_size=self.body_limit_bytes)
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
        except web.HTTPException as exc:  # e.g. 413 from the body limit
            response = error_response(exc.status, exc.reason)
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
            payload = parse_payload(body)
        except InvalidInput as exc:
            log.warning("rejected Alertmanager payload from %s: %s", request.remote, exc)
            return error_response(400, str(exc))
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
        limit = _limit(query)
        if isinstance(limit, web.Response):
            return limit
        try:
            page = await self.journal.list_signals(
                service=query.get("service") or None, limit=limit, cursor=query.get("cursor")
            )
        except PermanentError as exc:
            return error_response(400, f"cursor: {exc}")
        except TemporaryError as exc:
            return self._unavailable(f"journal unavailable: {exc}")
        return json_response({"items": list(page.items), "next": page.next_cursor})

    async def list_remediations(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        limit = _limit(query)
        if isinstance(limit, web.Response):
            return limit
        status = query.get("status") or None
        if status is not None and status not in REMEDIATION_STATUSES:
            return error_response(
                400, f"status: must be one of {', '.join(REMEDIATION_STATUSES)}, got {status!r}"
            )
        try:
            page = await self.journal.list_remediations(
                service=query.get("service") or None,
                status=status,
                limit=limit,
                cursor=query.get("cursor"),
            )
        except PermanentError as exc:
            return error_response(400, f"cursor: {exc}")
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
            return error_response(404, f"id: no remediation {rid!r}")
        return json_response(item)

    async def get_record(self, request: web.Request) -> web.StreamResponse:
        """The rollback record (plan §3.11) as Markdown, HTML or JSON."""
        rid = request.match_info["id"]
        fmt = request.query.get("format", "md")
        if fmt not in RECORD_FORMATS:
            return error_response(
                400, f"format: must be one of {', '.join(RECORD_FORMATS)}, got {fmt!r}"
            )
        try:
            item = await self.journal.get_remediation(rid)
            signal = await self.journal.get_signal(item["signal_id"]) if item else None
        except TemporaryError as exc:
            return self._unavailable(f"journal unavailable: {exc}")
        if item is None:
            return error_response(404, f"id: no remediation {rid!r}")
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
        try:
            body = orjson.loads(await request.read() or b"{}")
        except orjson.JSONDecodeError as exc:
            return error_response(400, f"body: not valid JSON ({exc})")
        by = body.get("by") if isinstance(body, dict) else None
        if not isinstance(by, str) or not by.strip():
            return error_response(400, 'by: name who approves (e.g. {"by": "alice"})')
        try:
            approved = await self.journal.approve_remediation(rid, by=by.strip(), at=self.clock())
            item = await self.journal.get_remediation(rid)
        except TemporaryError as exc:
            return self._unavailable(f"journal unavailable: {exc}")
        if item is None:
            return error_response(404, f"id: no remediation {rid!r}")
        if not approved:
            return error_response(409, f"id: {rid} is {item['status']}, not awaiting approval")
        log.warning("remediation %s approved by %s via the API", rid, by.strip())
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
            await asyncio.wait_for(self.journal.check_writable(), timeout=READY_PROBE_TIMEOUT)
        except (TemporaryError, TimeoutError) as exc:
            return json_response(
                {"status": "unavailable", "checks": {"journal": f"not writable: {exc}"}},
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


def _limit(query: Mapping[str, str]) -> int | web.Response:
    try:
        limit = int(query.get("limit", "50"))
    except ValueError:
        return error_response(400, f"limit: expected an integer, got {query['limit']!r}")
    if not 1 <= limit <= MAX_PAGE:
        return error_response(400, f"limit: must be between 1 and {MAX_PAGE}, got {limit}")
    return limit


def _circuit_body(record: CircuitRecord) -> dict[str, Any]:
    return {
        "open": record.open,
        "reason": record.reason,
        "changed_at": record.changed_at.isoformat() if record.changed_at else None,
    }
