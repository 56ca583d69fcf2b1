"""The aiohttp application: webhook intake, read API, health, metrics, OpenAPI."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import SecretStr

from remediator.domain.auth import Principal, Role, forbidden
from remediator.domain.errors import InvalidInput, TemporaryError
from remediator.domain.lifecycle import RemediationStatus
from remediator.domain.limits import InputLimits, TooLarge
from remediator.domain.paging import parse_cursor, shown
from remediator.domain.record import (
    CONTENT_TYPES,
    RECORD_FORMATS,
    render,
)
from remediator.domain.record_build import record_from_journal
from remediator.domain.rules import RulePack
from remediator.domain.signals import Signal, Status
from remediator.ingress.alertmanager import (
    ALERTS_PER_SLICE,
    AmPayload,
    parse_payload_in_slices,
    to_signals,
)
from remediator.ingress.answers import ERROR_MESSAGE, error_response, json_response
from remediator.ingress.approvals import ApprovalApi, DeployHistory
from remediator.ingress.auth import (
    Authenticator,
    AuthFailure,
    FailedAuthLimiter,
)
from remediator.ingress.bodies import RecordAnalysisBody, parse
from remediator.ingress.openapi import openapi_document
from remediator.ingress.services import ServicesView
from remediator.ingress.slack import PATH as SLACK_PATH
from remediator.ingress.slack import SlackInteractions
from remediator.ingress.throttled_log import ThrottledWarnings
from remediator.metrics import Metrics, exposition
from remediator.ports import (
    ApprovalStore,
    AutomationLevels,
    CircuitRecord,
    CircuitStore,
    JournalLifecycle,
    OnJournaled,
    RemediationPage,
    RemediationStore,
    ServiceStats,
    SignalPage,
    SignalStore,
    SlackReplies,
    newly_stored,
)

log = logging.getLogger(__name__)

MAX_PAGE = 1000
DEFAULT_RESPONSE_BYTES = 4 * 1024 * 1024
READY_PROBE_TIMEOUT = 3.0
# Webhooks parsed (and mapped to signals) at once; the others wait their turn, so the
# loop holds a slice of at most this many groups at a time (bench/pipeline.py storm).
PARSING_AT_ONCE = 2
# The first journal read of a byte-capped page; later reads are sized from the items seen.
FIRST_CHUNK = 16
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
AuthorizedHandler = Callable[[web.Request, Principal], Awaitable[web.StreamResponse]]
# Statuses that are ordinary answers (no such id, not awaiting approval), not mistakes
# worth a log line; every 4xx is still counted.
_QUIET_STATUSES = frozenset({404, 409})
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
_LIMIT_TEXT = re.compile(r"[0-9]{1,4}")


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


class ApiJournal(
    JournalLifecycle,
    SignalStore,
    RemediationStore,
    ApprovalStore,
    DeployHistory,
    CircuitStore,
    AutomationLevels,
    ServiceStats,
    Protocol,
):
    """The journal roles the API uses: intake and signals, remediations to read, requests
    and their approvals, deploy history (a request's target), the breaker, services'
    automation levels and outcomes, and liveness and readiness."""


class JsonPage(Protocol):
    """A page of JSON-able items, as the list endpoints send them."""

    @property
    def items(self) -> Sequence[dict[str, Any]]: ...

    @property
    def next_cursor(self) -> str | None: ...

    @property
    def item_cursors(self) -> Sequence[str]: ...


def remediation_json_page(page: RemediationPage) -> SignalPage:
    """A page of remediations in their API form (the same page shape as signals')."""
    return SignalPage(
        items=[item.to_api() for item in page.items],
        next_cursor=page.next_cursor,
        item_cursors=page.item_cursors,
    )


class IntakeApp:
    def __init__(
        self,
        *,
        journal: ApiJournal,
        metrics: Metrics,
        auth: Authenticator,
        state: IntakeState,
        service_labels: Sequence[str],
        namespace_labels: Sequence[str],
        body_limit_bytes: int,
        retry_after_seconds: int,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_new_signals: OnJournaled | None = None,
        readiness_details: Callable[[], dict[str, str]] = dict,
        on_approved: Callable[[], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        input_limits: InputLimits | None = None,
        failed_auth: FailedAuthLimiter | None = None,
        response_bytes: int = DEFAULT_RESPONSE_BYTES,
        metrics_need_read: bool = False,
        pack: RulePack | None = None,
        notice_channels: Sequence[str] = (),
        outcome_channel: str | None = None,
        decision_wait_seconds: float = 10.0,
        services: ServicesView | None = None,
        slack_signing_secret: SecretStr | None = None,
        slack_team_id: str | None = None,
        slack_replies: SlackReplies | None = None,
    ) -> None:
        """``pack`` is the loaded rule pack: rollback requests are checked against its
        catalog and rules (none: every service is unknown). ``notice_channels`` and
        ``outcome_channel`` are where approvals, rejections and cancels are told."""
        self.journal = journal
        # Without a rule pack (tests of other routes) the catalog is empty.
        self.services = services or ServicesView(
            journal=journal, pack=RulePack(services={}, rules=()), clock=clock
        )
        self.metrics = metrics
        metrics.journal_writer_up.set_function(lambda: float(journal.alive()))
        self.auth = auth
        self.failed_auth = failed_auth
        self.response_bytes = response_bytes
        self.metrics_need_read = metrics_need_read
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
        # The catalog names each service's owner, for the record.
        self.pack = pack or RulePack(services={}, rules=())
        self.approvals = ApprovalApi(
            journal=journal,
            pack=pack or RulePack(services={}, rules=()),
            metrics=metrics,
            unavailable=self._unavailable,
            clock=lambda: self.clock(),
            notice_channels=notice_channels,
            outcome_channel=outcome_channel,
            on_new_signals=lambda stored: (
                self.on_new_signals(stored) if self.on_new_signals else None
            ),
            on_approved=lambda: self.on_approved() if self.on_approved else None,
            decision_wait_seconds=decision_wait_seconds,
            draining=lambda: self.state.draining,
        )
        self._parsing = asyncio.Semaphore(PARSING_AT_ONCE)
        # Slack's clicks carry Slack's signature, not our credentials (ingress/slack.py).
        self.slack = (
            SlackInteractions(
                signing_secret=slack_signing_secret, auth=auth, approvals=self.approvals,
                replies=slack_replies, metrics=metrics, team_id=slack_team_id,
                failed_auth=failed_auth, clock=lambda: self.clock(),
            )
            if slack_signing_secret is not None
            else None
        )  # fmt: skip
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
        read, operate = Role.READ, Role.OPERATE
        # The webhook checks its role (ingest) itself: a draining daemon answers 503 first.
        app.router.add_post("/api/v1/webhooks/alertmanager", self.alertmanager_webhook)
        app.router.add_get("/api/v1/signals", self._requires(read, self.list_signals))
        app.router.add_get("/api/v1/remediations", self._requires(read, self.list_remediations))
        app.router.add_get("/api/v1/remediations/{id}", self._requires(read, self.get_remediation))
        app.router.add_get(
            "/api/v1/remediations/{id}/record", self._requires(read, self.get_record)
        )
        app.router.add_patch(
            "/api/v1/remediations/{id}/record", self._requires(operate, self.edit_record)
        )
        for path, handler in self.approvals.routes():
            app.router.add_post(path, self._requires(operate, handler))
        app.router.add_get("/api/v1/circuit", self._requires(read, self.get_circuit))
        app.router.add_get("/api/v1/services", self._requires(read, self.list_services))
        app.router.add_post("/api/v1/circuit/reset", self._requires(operate, self.reset_circuit))
        if self.slack is not None:
            app.router.add_post(SLACK_PATH, self.slack.handle)
            slack = self.slack

            async def close_slack(_: web.Application) -> None:
                await slack.drain()

            app.on_shutdown.append(close_slack)
        else:
            app.router.add_post(SLACK_PATH, self._slack_off)
        # Open: probes and tools must reach them without a credential, and they hold
        # nothing secret (docs/security.md).
        app.router.add_get("/api/v1/openapi.json", self.openapi)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        metrics: Handler = self.metrics_endpoint
        if self.metrics_need_read:
            metrics = self._requires(read, self._anyone(self.metrics_endpoint))
        app.router.add_get("/metrics", metrics)
        return app

    async def _slack_off(self, request: web.Request) -> web.StreamResponse:
        return error_response(
            404, "Slack interactions are off: set slack.signing_secret (and slack.token) to "
            "take the clicks of Approve and Reject",
        )  # fmt: skip

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

    # -- authentication and authorization -----------------------------------------------
    def _requires(self, role: Role, handler: AuthorizedHandler) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            outcome = self._authorize(request, role)
            if isinstance(outcome, web.Response):
                return outcome
            return await handler(request, outcome)

        return guarded

    @staticmethod
    def _anyone(handler: Handler) -> AuthorizedHandler:
        async def answer(request: web.Request, principal: Principal) -> web.StreamResponse:
            return await handler(request)

        return answer

    def _authorize(self, request: web.Request, role: Role) -> Principal | web.Response:
        """The request's principal if it holds ``role``; else the 429, 401 or 403 answer.

        An address past its failed-authentication budget is answered 429 before its
        credential is looked at. Nothing here touches the journal.
        """
        client = request.remote or "unknown"
        if self.failed_auth is not None:
            wait = self.failed_auth.retry_after(client)
            if wait is not None:
                self.metrics.auth_throttled.inc()
                return error_response(
                    429,
                    f"too many failed authentications from {client}: retry in {wait}s",
                    headers={"Retry-After": str(wait)},
                )
        outcome = self.auth.authenticate(
            request.headers.get("Authorization"), _peer_certificate(request)
        )
        if isinstance(outcome, AuthFailure):
            self.metrics.auth_failures.labels(reason=outcome.value).inc()
            if self.failed_auth is not None:
                self.failed_auth.failed(client)
            return error_response(
                401,
                "missing or wrong credentials",
                headers={"WWW-Authenticate": self.auth.challenge()},
            )
        if not outcome.holds(role):
            return error_response(403, forbidden(outcome, role))
        return outcome

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
        principal = self._authorize(request, Role.INGEST)
        if isinstance(principal, web.Response):
            return principal
        body = await request.read()
        # Webhooks take turns at the CPU work: in a storm every Alertmanager group arrives
        # at once, and a slice of each, all in one turn of the loop, held it 20-30 ms.
        async with self._parsing:
            try:
                payload = await parse_payload_in_slices(body, limits=self.input_limits)
            except InvalidInput as exc:  # logged (throttled) and counted by _contain
                return error_response(413 if isinstance(exc, TooLarge) else 400, str(exc))
            received_at = self.clock()
            signals = await self._signals_of(payload, received_at=received_at, by=principal.name)
        if payload.truncatedAlerts > 0:
            self.metrics.alerts_truncated.inc(payload.truncatedAlerts)
            log.warning(
                "Alertmanager receiver %r truncated %d alert(s) of group %s: raise max_alerts",
                payload.receiver,
                payload.truncatedAlerts,
                payload.groupKey,
            )
        write_started = time.perf_counter()
        try:
            results = await self.journal.record_signals(signals)
        except TemporaryError as exc:
            log.error("journal unavailable, answering 503: %s", exc)
            return self._unavailable(f"journal unavailable: {exc}")
        self.metrics.journal_write_duration.observe(time.perf_counter() - write_started)
        journaled_after = max(0.0, (self.clock() - received_at).total_seconds())

        duplicates = 0
        unroutable: list[str] = []
        received: Counter[str] = Counter()
        observe_latency = self.metrics.journal_latency.observe
        for signal, result in zip(signals, results, strict=True):
            if result.duplicate:
                duplicates += 1
                continue
            received[signal.status.value] += 1
            observe_latency(journaled_after)  # per alert: the histogram counts alerts
            if not signal.routable:
                unroutable.append(signal.kind or "<no alertname>")
        for status, count in received.items():  # a labelled child looked up per status
            self.metrics.alerts_received.labels(status=status).inc(count)
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
            self.on_new_signals(newly_stored(signals, results))
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

    async def _signals_of(
        self, payload: AmPayload, *, received_at: datetime, by: str
    ) -> list[Signal]:
        signals: list[Signal] = []
        for start in range(0, len(payload.alerts), ALERTS_PER_SLICE):
            if start:
                await asyncio.sleep(0)  # a large group is mapped a slice at a time
            signals += to_signals(
                payload,
                received_at=received_at,
                service_labels=self.service_labels,
                namespace_labels=self.namespace_labels,
                received_by=by,
                alerts=payload.alerts[start : start + ALERTS_PER_SLICE],
            )
        return signals

    # -- read API ------------------------------------------------------------------
    async def list_signals(self, request: web.Request, _: Principal) -> web.StreamResponse:
        query = request.query
        limit, cursor = _limit(query), _cursor(query)
        service = _text(query, "service")

        async def fetch(count: int, after: str | None) -> SignalPage:
            return await self.journal.list_signals(service=service, limit=count, cursor=after)

        return await self._page_answer(fetch, limit=limit, cursor=cursor)

    async def list_remediations(self, request: web.Request, _: Principal) -> web.StreamResponse:
        query = request.query
        limit, cursor = _limit(query), _cursor(query)
        status = _status(query)
        service = _text(query, "service")

        async def fetch(count: int, after: str | None) -> SignalPage:
            page = await self.journal.list_remediations(
                service=service, status=status, limit=count, cursor=after
            )
            return remediation_json_page(page)

        return await self._page_answer(fetch, limit=limit, cursor=cursor)

    async def _page_answer(
        self,
        fetch: Callable[[int, str | None], Awaitable[JsonPage]],
        *,
        limit: int,
        cursor: str | None,
    ) -> web.Response:
        try:
            items, next_cursor = await capped_page(
                fetch, limit=limit, cursor=cursor, max_bytes=self.response_bytes
            )
        except TemporaryError as exc:
            return self._unavailable(f"journal unavailable: {exc}")
        body = b'{"items":[' + b",".join(items) + b'],"next":' + orjson.dumps(next_cursor) + b"}"
        return web.Response(body=body, content_type="application/json")

    async def get_remediation(self, request: web.Request, _: Principal) -> web.StreamResponse:
        rid = request.match_info["id"]
        try:
            item = await self.journal.get_remediation(rid)
        except TemporaryError as exc:
            return self._unavailable(f"journal unavailable: {exc}")
        if item is None:
            return error_response(404, f"id: no remediation {shown(rid)}")
        return json_response(item.to_api())

    async def get_record(self, request: web.Request, _: Principal) -> web.StreamResponse:
        """The rollback record (plan §3.11) as Markdown, HTML or JSON."""
        rid = request.match_info["id"]
        fmt = request.query.get("format", "md")
        if fmt not in RECORD_FORMATS:
            raise InvalidInput(
                f"must be one of {', '.join(RECORD_FORMATS)}, got {shown(fmt)}", where="format"
            )
        try:
            item = await self.journal.get_remediation(rid)
            signal = await self.journal.get_signal(item.signal_id) if item else None
            analysis = await self.journal.record_analysis(item.id) if item else None
        except TemporaryError as exc:
            return self._unavailable(f"journal unavailable: {exc}")
        if item is None:
            return error_response(404, f"id: no remediation {shown(rid)}")
        spec = self.pack.services.get(item.service)
        record = record_from_journal(
            item, signal, owner=spec.owner if spec is not None else None, analysis=analysis
        )
        body = render(record, fmt=fmt, record_url=str(request.url))
        headers = {"Content-Type": CONTENT_TYPES[fmt]}
        if fmt == "html":
            # No scripts and every value escaped; the policy is a second line of defence.
            headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
        return web.Response(text=body, headers=headers)

    async def get_circuit(self, request: web.Request, _: Principal) -> web.StreamResponse:
        try:
            record = await self.journal.circuit()
        except TemporaryError as exc:
            return self._unavailable(f"journal unavailable: {exc}")
        return json_response(_circuit_body(record))

    async def edit_record(self, request: web.Request, principal: Principal) -> web.StreamResponse:
        """Root cause, improvements and lessons of a record; the editor is the principal."""
        rid = request.match_info["id"]
        try:
            document = orjson.loads(await request.read() or b"{}")
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"not valid JSON ({exc})", where="body") from None
        if not isinstance(document, dict):
            raise InvalidInput('expected a JSON object such as {"root_cause": "..."}',
                               where="body")  # fmt: skip
        changes = parse(RecordAnalysisBody, document).changes()
        try:
            edited = await self.journal.edit_record_analysis(
                rid, changes=changes, by=principal.name, at=self.clock()
            )
        except TemporaryError as exc:
            return self._unavailable(f"journal unavailable: {exc}")
        if edited is None:
            return error_response(404, f"id: no remediation {shown(rid)}")
        log.info("record of %s edited by %s (%s)", rid, principal.name, ", ".join(changes))
        return json_response({"remediation_id": rid, **edited.to_dict()})

    async def reset_circuit(self, request: web.Request, principal: Principal) -> web.StreamResponse:
        """Close the breaker; automated actions before now no longer count toward it."""
        try:
            await self.journal.set_circuit(
                open=False, reason=None, at=self.clock(), by=principal.name
            )
            record = await self.journal.circuit()
        except TemporaryError as exc:
            return self._unavailable(f"journal unavailable: {exc}")
        log.warning("circuit breaker reset through the API by %s (from %s)", principal.name,
                    request.remote)  # fmt: skip
        return json_response(_circuit_body(record))

    async def list_services(self, request: web.Request, _: Principal) -> web.StreamResponse:
        """The catalog's services: automation level, its last change, 30 days of outcomes."""
        try:
            return json_response(await self.services.listing())
        except TemporaryError as exc:
            return self._unavailable(f"journal unavailable: {exc}")

    # -- operations ----------------------------------------------------------------
    async def healthz(self, request: web.Request) -> web.StreamResponse:
        # Liveness fails only for what a restart cures: a journal that can no longer
        # write (draining or a busy disk are readiness matters).
        if not self.journal.alive():
            checks = {"journal": "writer stopped or stuck; restart needed"}
            return json_response({"status": "unavailable", "checks": checks}, status=503)
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
        body, content_type = exposition(self.metrics.registry, request.headers.get("Accept"))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def openapi(self, request: web.Request) -> web.StreamResponse:
        return json_response(openapi_document(metrics_need_read=self.metrics_need_read))


REMEDIATION_STATUSES = tuple(status.value for status in RemediationStatus)


def _status(query: Mapping[str, str]) -> RemediationStatus | None:
    """The optional ``status`` filter: one of the lifecycle's statuses."""
    text = query.get("status") or None
    if text is None:
        return None
    try:
        return RemediationStatus(text)
    except ValueError:
        raise InvalidInput(
            f"must be one of {', '.join(REMEDIATION_STATUSES)}, got {shown(text)}", where="status"
        ) from None


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


async def capped_page(
    fetch: Callable[[int, str | None], Awaitable[JsonPage]],
    *,
    limit: int,
    cursor: str | None,
    max_bytes: int,
) -> tuple[list[bytes], str | None]:
    """Up to ``limit`` items (JSON-encoded) whose bytes stay within ``max_bytes``, and the
    cursor of the rest (None when there is none).

    A page is cut short at the byte cap, never truncated: its ``next`` then continues
    right after its last item. A single item larger than the cap is sent alone. The
    journal is read a chunk at a time, sized from the items seen, so memory stays near
    the cap whatever ``limit`` asks for.
    """
    encoded: list[bytes] = []
    size = 0
    chunk = min(limit, FIRST_CHUNK)
    while True:
        page = await fetch(chunk, cursor)
        if not page.items:
            return encoded, None
        for item, after in zip(page.items, page.item_cursors, strict=True):
            data = orjson.dumps(item)
            if encoded and size + len(data) + 1 > max_bytes:
                return encoded, cursor  # the cursor after the last item sent
            encoded.append(data)
            size += len(data) + 1
            cursor = after
        if page.next_cursor is None or len(encoded) >= limit:
            return encoded, page.next_cursor
        cursor = page.next_cursor
        average = max(size // len(encoded), 1)
        chunk = max(1, min(limit - len(encoded), MAX_PAGE, (max_bytes - size) // average + 1))


def _peer_certificate(request: web.Request) -> dict[str, Any] | None:
    """The verified TLS client certificate of the connection (mTLS), if there is one."""
    transport = request.transport
    certificate = transport.get_extra_info("peercert") if transport is not None else None
    return certificate if isinstance(certificate, dict) and certificate else None


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
        "changed_by": record.changed_by,
    }
