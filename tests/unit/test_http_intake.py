from __future__ import annotations

import asyncio
import base64
import gzip
import io
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from remediator.domain.errors import InvalidInput
from remediator.domain.failpoints import NO_FAILPOINTS, Failpoints
from remediator.domain.lifecycle import RemediationStatus
from remediator.domain.limits import InputLimits
from remediator.domain.plans import ActionKind
from remediator.ingress.auth import Authenticator, FailedAuthLimiter, WebhookCredential
from remediator.ingress.http import IntakeApp, IntakeState
from remediator.journal.sqlite import SqliteJournal
from remediator.metrics import Metrics
from remediator.ports import DecisionRecord, NewRemediation
from tests.unit.auth_helpers import OPERATOR_TOKEN, WEBHOOK_TOKEN, bearer, standard_authenticator
from tests.unit.journal_helpers import writer_held
from tests.unit.payloads import alert, payload, storm

TOKEN = WEBHOOK_TOKEN
BEARER = bearer(TOKEN)  # the webhook's credential: ingest only
API = bearer(OPERATOR_TOKEN)  # a principal with read and operate
WEBHOOK = "/api/v1/webhooks/alertmanager"


class Harness:
    def __init__(self, client: TestClient, intake: IntakeApp, journal: SqliteJournal, db: Path):
        self.client = client
        self.intake = intake
        self.journal = journal
        self.db = db

    async def post(self, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        # aiohttp warns about large raw bodies: stream them from a buffer instead.
        resp = await self.client.post(
            WEBHOOK, data=io.BytesIO(data), headers=BEARER if headers is None else headers
        )
        return resp.status, await resp.json()

    async def stored(self) -> list[dict[str, Any]]:
        return list((await self.journal.list_signals(limit=1000)).items)


MakeHarness = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def make_harness(tmp_path: Path) -> AsyncIterator[MakeHarness]:
    opened: list[tuple[TestClient, SqliteJournal]] = []

    async def make(
        *,
        auth: Authenticator | None = None,
        failed_auth: FailedAuthLimiter | None = None,
        response_bytes: int = 4 * 1024 * 1024,
        body_limit_bytes: int = 16 * 1024 * 1024,
        wrap: Callable[[SqliteJournal], Any] = lambda journal: journal,
        monotonic: Callable[[], float] | None = None,
        input_limits: InputLimits | None = None,
        call_timeout_seconds: float = 5.0,
        failpoints: Failpoints = NO_FAILPOINTS,
    ) -> Harness:
        db = tmp_path / f"journal{len(opened)}.db"
        journal = SqliteJournal(
            path=db,
            busy_timeout_ms=100,
            call_timeout_seconds=call_timeout_seconds,
            failpoints=failpoints,
        )
        await journal.open()
        intake = IntakeApp(
            journal=wrap(journal),
            metrics=Metrics(),
            auth=auth or standard_authenticator(),
            failed_auth=failed_auth,
            response_bytes=response_bytes,
            state=IntakeState(),
            service_labels=("service", "app"),
            namespace_labels=("namespace",),
            body_limit_bytes=body_limit_bytes,
            retry_after_seconds=7,
            **({"monotonic": monotonic} if monotonic is not None else {}),
            input_limits=input_limits,
        )
        client = TestClient(TestServer(intake.build()))
        await client.start_server()
        opened.append((client, journal))
        return Harness(client, intake, journal, db)

    yield make
    for client, journal in opened:
        await client.close()
        await journal.close()


async def test_accepts_and_journals_each_alert(make_harness: MakeHarness) -> None:
    h = await make_harness()
    status, body = await h.post(
        payload([alert(fingerprint="a"), alert(fingerprint="b", status="resolved")])
    )
    assert status == 200
    assert body["accepted"] == 2 and body["duplicates"] == 0
    assert len(body["signal_ids"]) == 2
    stored = await h.stored()
    assert {s["id"] for s in stored} == set(body["signal_ids"])
    assert {s["status"] for s in stored} == {"firing", "resolved"}


async def test_replays_sequential_and_concurrent_are_stored_once(make_harness: MakeHarness) -> None:
    h = await make_harness()
    body = storm(10)
    first_status, first = await h.post(body)
    assert first_status == 200 and first["accepted"] == 10
    for _ in range(100):
        status, again = await h.post(body)
        assert status == 200
        assert (again["accepted"], again["duplicates"]) == (0, 10)
        assert again["signal_ids"] == first["signal_ids"]
    results = await asyncio.gather(*(h.post(body) for _ in range(20)))
    assert all(status == 200 and r["duplicates"] == 10 for status, r in results)
    assert len(await h.stored()) == 10


async def test_concurrent_first_deliveries_count_each_alert_once(make_harness: MakeHarness) -> None:
    # HA Alertmanager pairs deliver the same group at the same moment.
    h = await make_harness()
    results = await asyncio.gather(*(h.post(storm(25)) for _ in range(20)))
    assert sum(r["accepted"] for _, r in results) == 25
    assert sum(r["duplicates"] for _, r in results) == 25 * 19
    assert len(await h.stored()) == 25


async def test_large_group_fits_the_default_body_limit(make_harness: MakeHarness) -> None:
    h = await make_harness()
    big = storm(1500)
    assert len(orjson.dumps(big)) > 1024 * 1024  # larger than aiohttp's default limit
    status, body = await h.post(big)
    assert status == 200 and body["accepted"] == 1500


async def test_body_over_the_configured_limit_is_413(make_harness: MakeHarness) -> None:
    h = await make_harness(body_limit_bytes=2048)
    status, body = await h.post(storm(50))
    assert status == 413
    assert "error" in body
    assert await h.stored() == []


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
    ],
)
async def test_missing_or_wrong_token_is_401_and_nothing_is_stored(
    make_harness: MakeHarness, headers: dict[str, str]
) -> None:
    h = await make_harness()
    resp = await h.client.post(WEBHOOK, data=orjson.dumps(payload([alert()])), headers=headers)
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="remediator"'
    assert await h.stored() == []
    api = await h.client.get("/api/v1/signals", headers=headers)
    assert api.status == 401
    assert (
        h.intake.metrics.registry.get_sample_value(
            "remediator_auth_failures_total", {"reason": "invalid" if headers else "missing"}
        )
        == 2
    )


async def test_basic_auth_is_accepted_when_configured(make_harness: MakeHarness) -> None:
    h = await make_harness(
        auth=Authenticator(webhook=WebhookCredential(basic_user="am", basic_password="pw"))
    )
    good = "Basic " + base64.b64encode(b"am:pw").decode()
    bad = "Basic " + base64.b64encode(b"am:nope").decode()
    assert (await h.post(payload([alert()]), headers={"Authorization": bad}))[0] == 401
    assert (await h.post(payload([alert()]), headers={"Authorization": good}))[0] == 200


async def test_malformed_input_is_400_naming_the_field(make_harness: MakeHarness) -> None:
    h = await make_harness()
    status, body = await h.post(payload([{**alert(), "startsAt": "soon"}]))
    assert status == 400
    assert body["error"].startswith("alerts[0].startsAt")
    status, body = await h.post(b"{")
    assert status == 400 and body["error"].startswith("body: not valid JSON")
    assert await h.stored() == []


async def test_journal_unavailable_is_503_then_retry_succeeds(make_harness: MakeHarness) -> None:
    h = await make_harness()
    lock = sqlite3.connect(h.db, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        resp = await h.client.post(WEBHOOK, data=orjson.dumps(payload([alert()])), headers=BEARER)
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "7"
        ready = await h.client.get("/readyz")
        assert ready.status == 503
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    status, body = await h.post(payload([alert()]))
    assert status == 200 and body["accepted"] == 1
    assert (await h.client.get("/readyz")).status == 200


async def test_draining_answers_503_and_not_ready(make_harness: MakeHarness) -> None:
    h = await make_harness()
    h.intake.state.draining = True
    resp = await h.client.post(WEBHOOK, data=orjson.dumps(payload([alert()])), headers=BEARER)
    assert resp.status == 503 and resp.headers["Retry-After"] == "7"
    assert (await h.client.get("/readyz")).status == 503
    assert (await h.client.get("/healthz")).status == 200
    assert await h.stored() == []


async def test_truncated_unroutable_and_duplicates_are_counted(make_harness: MakeHarness) -> None:
    h = await make_harness()
    body = payload(
        [alert(fingerprint="x"), alert(service=None, fingerprint="y")], truncatedAlerts=3
    )
    await h.post(body)
    await h.post(body)
    text = await (await h.client.get("/metrics")).text()
    assert "remediator_alerts_truncated_total 6.0" in text
    assert "remediator_alerts_unroutable_total 1.0" in text
    assert "remediator_alerts_duplicate_total 2.0" in text
    assert 'remediator_alerts_received_total{status="firing"} 2.0' in text
    assert 'remediator_webhook_requests_total{code="200"} 2.0' in text
    assert "remediator_journal_write_duration_seconds_count 2.0" in text
    unroutable = [s for s in await h.stored() if not s["routable"]]
    assert len(unroutable) == 1 and unroutable[0]["service"] is None


async def test_signals_api_pages_newest_first(make_harness: MakeHarness) -> None:
    h = await make_harness()
    await h.post(storm(5))
    await h.post(payload([alert(service="other", fingerprint="o")]))
    resp = await h.client.get(
        "/api/v1/signals", params={"service": "checkout", "limit": "3"}, headers=API
    )
    page = await resp.json()
    assert resp.status == 200
    assert len(page["items"]) == 3 and page["next"] is not None
    resp2 = await h.client.get(
        "/api/v1/signals",
        params={"service": "checkout", "limit": "3", "cursor": page["next"]},
        headers=API,
    )
    page2 = await resp2.json()
    assert len(page2["items"]) == 2 and page2["next"] is None
    pods = [i["labels"]["pod"] for i in page["items"] + page2["items"]]
    assert pods == [f"checkout-{i}" for i in (4, 3, 2, 1, 0)]


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ({"limit": "x"}, "limit: expected an integer"),
        ({"limit": "0"}, "limit: must be"),
        ({"cursor": "zz"}, "cursor"),
    ],
)
async def test_signals_api_rejects_bad_parameters(
    make_harness: MakeHarness, query: dict[str, str], fragment: str
) -> None:
    h = await make_harness()
    resp = await h.client.get("/api/v1/signals", params=query, headers=API)
    assert resp.status == 400
    assert fragment in (await resp.json())["error"]


# -- a client's mistake is a 4xx naming the field, never a 5xx or a traceback -------------
def assert_no_error_logged(caplog: pytest.LogCaptureFixture) -> None:
    """No ERROR line and no traceback above DEBUG: a client's mistake is not our fault."""
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not loud, [r.getMessage() for r in loud]
    traced = [r for r in caplog.records if r.exc_info and r.levelno > logging.DEBUG]
    assert not traced, [r.getMessage() for r in traced]


def warning_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def rejected(h: Harness, route: str, code: int) -> float | None:
    return h.intake.metrics.registry.get_sample_value(
        "remediator_http_rejected_total", {"route": route, "code": str(code)}
    )


async def raw_request(
    h: Harness, head: bytes, body: bytes = b""
) -> tuple[int, dict[str, str], bytes]:
    """Bytes on the wire, for what aiohttp's client refuses to send (odd header bytes)."""
    server = h.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(head + b"\r\nHost: test\r\nConnection: close\r\n\r\n" + body)
        await writer.drain()
        data = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    header_block, _, content = data.partition(b"\r\n\r\n")
    status_line, *lines = header_block.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, content


@pytest.mark.parametrize(
    ("alerts", "field"),
    [
        ([alert(starts_at="0001-01-01T00:00:00Z")], "alerts[0].startsAt"),
        ([alert(starts_at="0001-01-01T00:10:00+01:00")], "alerts[0].startsAt"),  # astimezone
        ([alert(starts_at="9999-12-31T23:59:59-01:00")], "alerts[0].startsAt"),  # overflow
        ([alert(starts_at="1969-12-31T23:59:59Z")], "alerts[0].startsAt"),
        ([alert(starts_at="9000-01-01T00:00:00Z")], "alerts[0].startsAt"),
        ([alert(starts_at="8999-12-31T23:30:00-01:00")], "alerts[0].startsAt"),  # 9000 in UTC
        (
            [
                *(alert(fingerprint=f"ok{i}") for i in range(3)),
                {**alert(fingerprint="late"), "endsAt": "9999-12-31T23:59:59-01:00"},
            ],
            "alerts[3].endsAt",
        ),
        ([{**alert(), "endsAt": "1969-07-20T20:17:00Z"}], "alerts[0].endsAt"),
        ([{**alert(), "endsAt": "2026-11-27"}, alert(starts_at="x")], "alerts[1].startsAt"),
    ],
)
async def test_times_the_daemon_cannot_compute_with_are_400_naming_the_field(
    make_harness: MakeHarness,
    caplog: pytest.LogCaptureFixture,
    alerts: list[dict[str, Any]],
    field: str,
) -> None:
    h = await make_harness()
    status, body = await h.post(payload(alerts))
    assert status == 400
    assert body["error"].startswith(f"{field}: ")
    assert await h.stored() == []  # nothing of the payload, not even its good alerts
    assert_no_error_logged(caplog)
    assert len(warning_lines(caplog)) == 1
    assert rejected(h, "/api/v1/webhooks/alertmanager", 400) == 1


async def test_times_at_the_edges_of_the_range_and_go_zero_ends_are_accepted(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness()
    alerts = [
        alert(fingerprint="first", starts_at="1970-01-01T00:00:00Z"),
        alert(fingerprint="last", starts_at="8999-12-31T23:59:59Z"),
        {**alert(fingerprint="no-end"), "endsAt": "0001-01-01T00:00:00Z"},
        {**alert(fingerprint="odd-zero"), "endsAt": "0001-01-01T00:10:00+01:00"},
        alert(fingerprint="offset", starts_at="2026-11-27T11:00:00+01:00"),
    ]
    status, body = await h.post(payload(alerts))
    assert status == 200 and body["accepted"] == 5
    stored = await h.stored()
    starts = sorted(s["starts_at"] for s in stored)
    assert starts[0].startswith("1970-01-01T00:00:00") and starts[-1].startswith("8999-12-31")
    assert "2026-11-27T10:00:00" in " ".join(starts)  # +01:00 stored as UTC
    assert all(s["ends_at"] is None for s in stored)


@pytest.mark.parametrize("path", ["/api/v1/signals", "/api/v1/remediations"])
@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("cursor=%C2%B2", "cursor"),  # "²".isdigit() is True; int("²") raises
        ("cursor=%D9%A3", "cursor"),  # "٣": int() would take it as 3
        ("cursor=" + "9" * 5000, "cursor"),  # int() refuses more than 4300 digits
        ("cursor=9223372036854775808", "cursor"),  # one past SQLite's INTEGER
        ("cursor=99999999999999999999", "cursor"),
        ("cursor=-1", "cursor"),
        ("cursor=", "cursor"),
        ("cursor=%201", "cursor"),
        ("cursor=%2B1", "cursor"),
        ("cursor=0x10", "cursor"),
        ("cursor=%00", "cursor"),
        ("cursor=%FF%FE", "cursor"),
        ("limit=%C2%B2", "limit"),
        ("limit=%D9%A3", "limit"),
        ("limit=" + "9" * 5000, "limit"),
        ("limit=-1", "limit"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=", "limit"),
        ("limit=5_0", "limit"),
        ("limit=%205", "limit"),
        ("service=check%00out", "service"),
        ("service=check%0Aout", "service"),
    ],
)
async def test_bad_paging_and_filters_are_400_naming_the_parameter(
    make_harness: MakeHarness,
    caplog: pytest.LogCaptureFixture,
    path: str,
    query: str,
    field: str,
) -> None:
    h = await make_harness()
    resp = await h.client.get(f"{path}?{query}", headers=API)
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error.startswith(f"{field}: ")
    assert len(error) < 300  # a 5,000-digit value is not echoed back whole
    assert_no_error_logged(caplog)
    assert rejected(h, path, 400) == 1


@pytest.mark.parametrize("path", ["/api/v1/signals", "/api/v1/remediations"])
async def test_the_largest_cursor_and_limit_are_served(
    make_harness: MakeHarness, path: str
) -> None:
    h = await make_harness()
    await h.post(payload([alert()]))
    resp = await h.client.get(
        path, params={"cursor": "9223372036854775807", "limit": "1000"}, headers=API
    )
    assert resp.status == 200
    assert (await resp.json())["next"] is None


@pytest.mark.parametrize("cursor", ["²", "٣", "9" * 5000, "9223372036854775808", "-1", "", " 1"])
async def test_the_journal_refuses_bad_cursors_itself(
    make_harness: MakeHarness, cursor: str
) -> None:
    # For callers other than the HTTP API (the CLI, the engine): InvalidInput, not a crash.
    h = await make_harness()
    with pytest.raises(InvalidInput) as signals:
        await h.journal.list_signals(cursor=cursor)
    with pytest.raises(InvalidInput) as remediations:
        await h.journal.list_remediations(cursor=cursor)
    assert signals.value.where == remediations.value.where == "cursor"
    for limit in (0, -1, 2**63, 10**30):
        with pytest.raises(InvalidInput) as bad_limit:
            await h.journal.list_signals(limit=limit)
        assert bad_limit.value.where == "limit"


@pytest.mark.parametrize(
    "authorization",
    [
        b"Bearer \xff\xfe",  # not UTF-8
        b"Bearer " + TOKEN.encode() + b"\xe9",  # the token, then a Latin-1 byte
        b"Bearer \xc3\xa9",  # UTF-8, not ASCII
        b"\xff\xfe",
        b"Basic \xc3\xa9",
        b"Basic ###",
        b"Basic =",
        b"Basic " + base64.b64encode(b"\xff\xfe\x00:\x80"),  # base64 of garbage
        b"Basic " + base64.b64encode(b"no-colon"),
        b"Bearer",
        b"Bearer ",
        b"Basic",
        b"bearer" + b" " * 50,
        b"Bearer " + b"a" * 4000,
        b"Negotiate " + TOKEN.encode(),
    ],
)
async def test_a_malformed_authorization_header_is_401_without_a_traceback(
    make_harness: MakeHarness, caplog: pytest.LogCaptureFixture, authorization: bytes
) -> None:
    h = await make_harness(
        auth=Authenticator(
            webhook=WebhookCredential(bearer_token=TOKEN, basic_user="am", basic_password="pw")
        )
    )
    body = orjson.dumps(payload([alert()]))
    for head, content in [
        (b"POST " + WEBHOOK.encode() + b" HTTP/1.1\r\nContent-Type: application/json\r\n"
         b"Content-Length: " + str(len(body)).encode(), body),
        (b"GET /api/v1/signals HTTP/1.1", b""),
        (b"GET /api/v1/remediations?cursor=%C2%B2 HTTP/1.1", b""),  # auth is checked first
    ]:  # fmt: skip
        status, headers, answer = await raw_request(
            h, head + b"\r\nAuthorization: " + authorization, content
        )
        assert status == 401
        assert headers["www-authenticate"] == 'Bearer realm="remediator", Basic realm="remediator"'
        assert orjson.loads(answer) == {"error": "missing or wrong credentials"}
    assert await h.stored() == []
    assert_no_error_logged(caplog)
    assert rejected(h, "/api/v1/webhooks/alertmanager", 401) == 1
    assert rejected(h, "/api/v1/signals", 401) == 1


async def test_raw_bearer_and_basic_webhook_credentials_post_alerts_and_nothing_else(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(
        auth=Authenticator(
            webhook=WebhookCredential(bearer_token=TOKEN, basic_user="am", basic_password="pw")
        )
    )
    body = orjson.dumps(payload([alert()]))
    for authorization in (
        b"Bearer " + TOKEN.encode(),
        b"bearer   " + TOKEN.encode() + b"  ",
        b"Basic " + base64.b64encode(b"am:pw"),
    ):
        status, _, _ = await raw_request(
            h,
            b"POST " + WEBHOOK.encode() + b" HTTP/1.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\nAuthorization: "
            + authorization,
            body,
        )  # fmt: skip
        assert status == 200
        status, _, answer = await raw_request(
            h, b"GET /api/v1/signals HTTP/1.1\r\nAuthorization: " + authorization
        )
        assert status == 403
        assert orjson.loads(answer) == {
            "error": "forbidden: role 'read' required (principal 'webhook' has: ingest)"
        }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{", "body"),
        (b'{"by": "\xff"}', "body"),  # not UTF-8
        (b'{"by": "\\ud800"}', "body"),  # lone surrogate
        (b"[1]", "body"),
        (b'"alice"', "body"),
        (b"null", "body"),
        (b"[" * 5000 + b"]" * 5000, "body"),  # deeper than the parser's limit
        (b'{"by": "alice"}', "by"),  # identity comes from the credential, never the body
        (b'{"by": 5, "comment": "ok"}', "by"),
        (b'{"comment": 5}', "comment"),
        (b'{"comment": ["why"]}', "comment"),
        (b'{"comment": "ali\\u0000ce"}', "comment"),
        (b'{"comment": "a\\u001b[31mred"}', "comment"),
        (orjson.dumps({"comment": "a" * 501}), "comment"),
        (orjson.dumps({"comment": "x" * (1024 * 1024)}), "comment"),  # 1 MiB
        (b'{"approver": "alice"}', "'approver'"),
    ],
)
async def test_bad_approve_bodies_are_400_naming_the_field(
    make_harness: MakeHarness, caplog: pytest.LogCaptureFixture, body: bytes, field: str
) -> None:
    h = await make_harness()
    resp = await h.client.post(
        "/api/v1/remediations/rem_x/approve", data=io.BytesIO(body), headers=API
    )
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error.startswith(f"{field}: ") and len(error) < 300
    assert_no_error_logged(caplog)
    assert rejected(h, "/api/v1/remediations/{id}/approve", 400) == 1


async def test_other_odd_requests_are_4xx_json_naming_what_was_wrong(
    make_harness: MakeHarness, caplog: pytest.LogCaptureFixture
) -> None:
    h = await make_harness(body_limit_bytes=4096)
    cases: list[tuple[str, str, dict[str, Any], int, str]] = [
        ("GET", "/api/v1/remediations/x/record", {"params": {"format": "pdf"}}, 400, "format: "),
        ("GET", "/api/v1/remediations/x/record", {"params": {"format": "md\x00"}}, 400, "format: "),
        ("GET", "/api/v1/remediations", {"params": {"status": "planned\x00"}}, 400, "status: "),
        ("GET", "/api/v1/remediations/a%00b", {}, 404, "id: "),
        ("GET", "/api/v1/remediations/" + "x" * 3000, {}, 404, "id: "),
        ("POST", "/api/v1/remediations/x/approve", {"data": b"{" * 5000}, 413, "body: "),
        ("GET", "/api/v1/nothing-here", {}, 404, "path: "),
        ("PUT", "/api/v1/signals", {}, 405, ""),
    ]
    for method, path, kwargs, code, prefix in cases:
        resp = await h.client.request(method, path, headers=API, **kwargs)
        assert resp.status == code, (method, path)
        error = (await resp.json())["error"]
        assert error.startswith(prefix) and len(error) < 300, error
    assert_no_error_logged(caplog)


async def test_a_body_that_cannot_be_decoded_is_400_and_nothing_is_stored(
    make_harness: MakeHarness, caplog: pytest.LogCaptureFixture
) -> None:
    h = await make_harness()
    status, _, answer = await raw_request(
        h,
        b"POST " + WEBHOOK.encode() + b" HTTP/1.1\r\nAuthorization: Bearer " + TOKEN.encode()
        + b"\r\nContent-Encoding: gzip\r\nContent-Length: 10",
        b"0123456789",
    )  # fmt: skip
    assert status == 400
    assert orjson.loads(answer)["error"].startswith("body: cannot be read")
    good = gzip.compress(orjson.dumps(payload([alert()])))
    status, _, answer = await raw_request(
        h,
        b"POST " + WEBHOOK.encode() + b" HTTP/1.1\r\nAuthorization: Bearer " + TOKEN.encode()
        + b"\r\nContent-Encoding: gzip\r\nContent-Length: " + str(len(good)).encode(),
        good,
    )  # fmt: skip
    assert status == 200 and orjson.loads(answer)["accepted"] == 1
    assert len(await h.stored()) == 1
    assert_no_error_logged(caplog)


@pytest.mark.parametrize(
    "head",
    [
        b"GET /api/v1/signals HTTP/1.1\r\nAuthorization: Bearer \x00" + TOKEN.encode(),
        b"GET /api/v1/remediations/\xff\xfe HTTP/1.1",
        b"GET /api/v1/signals HTTP/1.1\r\nX-Long: " + b"a" * 10_000,
        b"POST /api/v1/webhooks/alertmanager HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz",
    ],
)
async def test_requests_aiohttp_cannot_parse_are_counted_and_logged_once_without_traceback(
    make_harness: MakeHarness, caplog: pytest.LogCaptureFixture, head: bytes
) -> None:
    h = await make_harness(monotonic=lambda: 0.0)  # all three within the same minute
    for _ in range(3):
        status, _, _ = await raw_request(h, head)
        assert status == 400
    assert_no_error_logged(caplog)
    [line] = warning_lines(caplog)
    assert "malformed request answered 400" in line
    assert rejected(h, "malformed", 400) == 3


async def test_rejections_log_one_line_per_route_and_kind_per_minute(
    make_harness: MakeHarness, caplog: pytest.LogCaptureFixture
) -> None:
    now = [1000.0]
    h = await make_harness(monotonic=lambda: now[0])
    bad = payload([alert(starts_at="0001-01-01T00:00:00Z")])
    for _ in range(10):
        assert (await h.post(bad))[0] == 400
    assert (await h.post(bad, headers={}))[0] == 401  # another kind: its own line
    resp = await h.client.get("/api/v1/signals?cursor=x", headers=API)  # another route
    assert resp.status == 400
    lines = warning_lines(caplog)
    assert len(lines) == 3
    assert "alerts[0].startsAt" in lines[0]
    now[0] += 59.0
    await h.post(bad)
    assert len(warning_lines(caplog)) == 3
    now[0] += 2.0
    await h.post(bad)
    later = warning_lines(caplog)[3:]
    assert len(later) == 1 and "10 more like it in the last 61s were not logged" in later[0]
    assert rejected(h, "/api/v1/webhooks/alertmanager", 400) == 12
    assert_no_error_logged(caplog)


class BrokenJournal:
    """Delegates to the real journal; selected calls fail with an unexpected error (a bug)."""

    def __init__(self, inner: SqliteJournal, *, broken: set[str]) -> None:
        self.inner = inner
        self.broken = broken

    def __getattr__(self, name: str) -> Any:
        if name in self.broken:

            async def fail(*args: Any, **kwargs: Any) -> Any:
                raise RuntimeError("bug while holding password=hunter2")

            return fail
        return getattr(self.inner, name)


async def test_an_unexpected_error_is_a_500_with_an_error_id_and_one_log_line(
    make_harness: MakeHarness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    h = await make_harness(
        wrap=lambda journal: BrokenJournal(journal, broken={"circuit", "record_signals"})
    )
    resp = await h.client.get("/api/v1/circuit", headers=API)
    assert resp.status == 500
    body = await resp.json()
    assert body["error_id"] and body["error_id"] in body["error"]
    assert "hunter2" not in body["error"]
    status, hook = await h.post(payload([alert()]))
    assert status == 500 and hook["error_id"] != body["error_id"]

    above_debug = [r for r in caplog.records if r.levelno > logging.DEBUG]
    errors = [r.getMessage() for r in above_debug if r.levelno >= logging.ERROR]
    assert errors == [
        f"internal error {body['error_id']} answering GET /api/v1/circuit: RuntimeError",
        f"internal error {hook['error_id']} answering POST "
        "/api/v1/webhooks/alertmanager: RuntimeError",
    ]
    assert not [r for r in above_debug if r.exc_info]  # the traceback only at DEBUG
    assert not [r for r in above_debug if "hunter2" in r.getMessage()]
    assert [r for r in caplog.records if r.levelno == logging.DEBUG and r.exc_info]
    registry = h.intake.metrics.registry
    assert registry.get_sample_value("remediator_internal_errors_total", {"component": "http"}) == 2
    assert registry.get_sample_value("remediator_webhook_requests_total", {"code": "500"}) == 1
    assert (await h.client.get("/healthz")).status == 200  # the server keeps serving


# -- bounded input: refused naming the field, nothing journaled, one throttled line -------
MIB = 1024 * 1024


async def test_a_15_mib_label_is_400_naming_it_and_the_signals_api_stays_small(
    make_harness: MakeHarness, caplog: pytest.LogCaptureFixture
) -> None:
    h = await make_harness()  # the default limits, the default 16 MiB body limit
    assert (await h.post(payload([alert(fingerprint="before")])))[0] == 200
    alerts = [alert(fingerprint=f"ok{i}") for i in range(3)]
    alerts.append(alert(fingerprint="big", extra_labels={"foo": "x" * (15 * MIB)}))
    body = orjson.dumps(payload(alerts))
    assert len(body) < 16 * MIB  # within the body limit: the label limit refuses it
    for _ in range(3):
        status, answer = await h.post(body)
        assert status == 400
        assert answer == {"error": "alerts[3].labels.foo: value is 15728640 bytes, limit 4096"}
    [before] = await h.stored()  # none of the refused payload, not even its valid alerts
    assert before["labels"]["alertname"] == "HighErrorRate"
    resp = await h.client.get("/api/v1/signals?limit=5", headers=API)
    assert resp.status == 200
    assert len(await resp.read()) < 4096
    # One WARNING for the three (throttled), naming the field, never quoting the value.
    [line] = [w for w in warning_lines(caplog) if "labels.foo" in w]
    assert "value is 15728640 bytes, limit 4096" in line and "xxxx" not in line
    assert rejected(h, "/api/v1/webhooks/alertmanager", 400) == 3
    assert_no_error_logged(caplog)


async def test_more_alerts_than_the_limit_is_413_naming_alerts_and_the_limit(
    make_harness: MakeHarness, caplog: pytest.LogCaptureFixture
) -> None:
    h = await make_harness(input_limits=InputLimits(alerts_per_request=10))
    status, answer = await h.post(storm(11))
    assert status == 413
    assert answer["error"].startswith("alerts: 11 alerts in one request, limit 10")
    assert await h.stored() == []
    assert rejected(h, "/api/v1/webhooks/alertmanager", 413) == 1
    status, answer = await h.post(storm(10))
    assert status == 200 and answer["accepted"] == 10
    assert_no_error_logged(caplog)


@pytest.mark.parametrize(
    ("limits", "change", "error"),
    [
        (InputLimits(labels_per_signal=5), {"extra_labels": {"a": "1", "b": "2"}},
         "alerts[0].labels: 6 labels, limit 5"),
        (InputLimits(name_bytes=10), {"extra_labels": {"a_long_label": "1"}},
         "alerts[0].labels: a name is 12 bytes, limit 10 ('a_long_label')"),
        (InputLimits(annotation_value_bytes=20), {"annotations": {"summary": "s" * 21}},
         "alerts[0].annotations.summary: value is 21 bytes, limit 20"),
        (InputLimits(field_bytes=30), {"generatorURL": "http://prometheus/" + "g" * 13},
         "alerts[0].generatorURL: value is 31 bytes, limit 30"),
    ],
)  # fmt: skip
async def test_configured_limits_are_400_naming_the_field(
    make_harness: MakeHarness, limits: InputLimits, change: dict[str, Any], error: str
) -> None:
    h = await make_harness(input_limits=limits)
    extra_labels = change.pop("extra_labels", None)
    status, answer = await h.post(payload([{**alert(extra_labels=extra_labels), **change}]))
    assert (status, answer) == (400, {"error": error})
    assert await h.stored() == []


def writer_up(metrics_text: str) -> str:
    (line,) = [
        x for x in metrics_text.splitlines() if x.startswith("remediator_journal_writer_up ")
    ]
    return line.split()[1]


async def test_a_dead_journal_writer_fails_liveness_and_webhooks_get_503(
    make_harness: MakeHarness,
) -> None:
    # A bug in the writer, outside any one request: injected for service "doomed".
    h = await make_harness(failpoints=Failpoints.parse("journal.writer:doomed"))
    assert (await h.client.get("/healthz")).status == 200
    assert writer_up(await (await h.client.get("/metrics")).text()) == "1.0"
    doomed = orjson.dumps(payload([alert(service="doomed")]))
    for _ in range(2):  # the request that meets the crash, and every one after it
        resp = await h.client.post(WEBHOOK, data=doomed, headers=BEARER)
        assert resp.status == 503 and resp.headers["Retry-After"] == "7"
        assert "writer stopped" in (await resp.json())["error"]
    health = await h.client.get("/healthz")
    assert health.status == 503
    assert (await health.json()) == {
        "status": "unavailable",
        "checks": {"journal": "writer stopped or stuck; restart needed"},
    }
    assert (await h.client.get("/readyz")).status == 503
    assert writer_up(await (await h.client.get("/metrics")).text()) == "0.0"


async def test_a_journal_write_past_its_deadline_is_503_then_retry_succeeds(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness(call_timeout_seconds=0.5)
    async with writer_held(h.journal):
        resp = await h.client.post(WEBHOOK, data=orjson.dumps(payload([alert()])), headers=BEARER)
        assert resp.status == 503 and resp.headers["Retry-After"] == "7"
        assert "took longer than 0.5s" in (await resp.json())["error"]
    assert (await h.client.get("/healthz")).status == 200
    status, body = await h.post(payload([alert()]))
    assert status == 200 and body["accepted"] == 1


async def test_a_remediation_reads_in_the_api_exactly_as_before_the_typed_model(
    make_harness: MakeHarness,
) -> None:
    # The JSON of the API (and of `remediator remediations`): key for key, the times as
    # fixed-width UTC text, steps in the detail only.
    h = await make_harness()
    at = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    remediation = NewRemediation(
        id="rem_1", signal_id="sig_1", service="checkout", namespace="shop", rule="r",
        action=ActionKind.ROLLBACK, status=RemediationStatus.PLANNED, reason=None,
        manual=False, automated=True, created_at=at, decision={"steps": []}, explanation="why",
    )  # fmt: skip
    assert await h.journal.record_decisions(
        [DecisionRecord(signal_seq=1, signal_id="sig_1", service="checkout", outcome="plan",
                        reason=None, rule="r", decided_at=at, explanation="why",
                        remediation=remediation)],
        cursor=0, through_seq=1,
    )  # fmt: skip
    later = at + timedelta(seconds=1.5)
    claimed = await h.journal.claim_remediation(
        "rem_1", by="replica-a", at=later, to=RemediationStatus.RUNNING
    )
    assert claimed
    await h.journal.step_started("rem_1", holder="replica-a", idx=0, kind="rollout_undo", at=later)
    listed = {
        "id": "rem_1", "signal_id": "sig_1", "service": "checkout", "namespace": "shop",
        "rule": "r", "action": "rollback", "status": "running", "reason": None,
        "manual": False, "automated": True, "created_at": "2026-11-27T10:00:00.000000Z",
        "updated_at": "2026-11-27T10:00:01.500000Z", "explanation": "why",
        "claimed_by": "replica-a", "claimed_at": "2026-11-27T10:00:01.500000Z",
        "finished_at": None, "approved_by": None, "approved_at": None, "approved_as": None,
        "approval_comment": None,
    }  # fmt: skip
    page = await (await h.client.get("/api/v1/remediations", headers=API)).json()
    assert page == {"items": [listed], "next": None}
    detail = await (await h.client.get("/api/v1/remediations/rem_1", headers=API)).json()
    assert detail == {
        **listed,
        "decision": {"steps": []},
        "steps": [
            {"idx": 0, "kind": "rollout_undo", "status": "started",
             "started_at": "2026-11-27T10:00:01.500000Z", "finished_at": None, "detail": {}},
        ],
    }  # fmt: skip
    assert list(detail) == [*listed, "decision", "steps"]


async def test_metrics_are_openmetrics_when_the_scraper_asks(make_harness: MakeHarness) -> None:
    h = await make_harness()
    await h.post(payload([alert(fingerprint="om")]))

    plain = await h.client.get("/metrics")
    assert plain.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert "# EOF" not in await plain.text()

    # What Prometheus sends: OpenMetrics preferred, the text format as a fallback.
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    resp = await h.client.get("/metrics", headers={"Accept": accept})
    assert resp.headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    text = await resp.text()
    assert text.endswith("# EOF\n")
    assert "# TYPE remediator_alerts_received counter" in text
    assert 'remediator_alerts_received_total{status="firing"} 1.0' in text
    assert "# TYPE remediator_build info" in text


async def test_the_journal_hop_is_timed_from_receipt_for_new_alerts(
    make_harness: MakeHarness,
) -> None:
    h = await make_harness()
    ticks = iter(NOW_TICKS)
    h.intake.clock = lambda: next(ticks)  # received at the 1st reading, journaled at the 2nd
    await h.post(payload([alert(fingerprint="a"), alert(fingerprint="b")]))
    registry = h.intake.metrics.registry
    assert registry.get_sample_value("remediator_journal_latency_seconds_count") == 2
    assert registry.get_sample_value("remediator_journal_latency_seconds_sum") == 0.5
    assert (
        registry.get_sample_value("remediator_journal_latency_seconds_bucket", {"le": "0.2"}) == 0
    )
    assert (
        registry.get_sample_value("remediator_journal_latency_seconds_bucket", {"le": "0.5"}) == 2
    )

    h.intake.clock = lambda: next(ticks)
    await h.post(payload([alert(fingerprint="a")]))  # a duplicate: journaled before
    assert registry.get_sample_value("remediator_journal_latency_seconds_count") == 2


NOW_TICKS = [
    datetime(2026, 11, 27, 12, 0, tzinfo=UTC) + timedelta(seconds=s) for s in (0, 0.25, 1, 2)
]
