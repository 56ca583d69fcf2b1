from __future__ import annotations

import asyncio
import base64
import io
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from remediator.ingress.http import AuthConfig, IntakeApp, IntakeState
from remediator.journal.sqlite import SqliteJournal
from remediator.metrics import Metrics
from tests.unit.journal_helpers import writer_held
from tests.unit.payloads import alert, payload, storm

TOKEN = "s3cret-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
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
        auth: AuthConfig | None = None,
        body_limit_bytes: int = 16 * 1024 * 1024,
        call_timeout_seconds: float = 5.0,
    ) -> Harness:
        db = tmp_path / f"journal{len(opened)}.db"
        journal = SqliteJournal(
            path=db, busy_timeout_ms=100, call_timeout_seconds=call_timeout_seconds
        )
        await journal.open()
        intake = IntakeApp(
            journal=journal,
            metrics=Metrics(),
            auth=auth or AuthConfig(bearer_token=TOKEN),
            state=IntakeState(),
            service_labels=("service", "app"),
            namespace_labels=("namespace",),
            body_limit_bytes=body_limit_bytes,
            retry_after_seconds=7,
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


async def test_basic_auth_is_accepted_when_configured(make_harness: MakeHarness) -> None:
    h = await make_harness(auth=AuthConfig(basic_user="am", basic_password="pw"))
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
        "/api/v1/signals", params={"service": "checkout", "limit": "3"}, headers=BEARER
    )
    page = await resp.json()
    assert resp.status == 200
    assert len(page["items"]) == 3 and page["next"] is not None
    resp2 = await h.client.get(
        "/api/v1/signals",
        params={"service": "checkout", "limit": "3", "cursor": page["next"]},
        headers=BEARER,
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
    resp = await h.client.get("/api/v1/signals", params=query, headers=BEARER)
    assert resp.status == 400
    assert fragment in (await resp.json())["error"]


def writer_up(metrics_text: str) -> str:
    (line,) = [
        x for x in metrics_text.splitlines() if x.startswith("remediator_journal_writer_up ")
    ]
    return line.split()[1]


async def test_a_dead_journal_writer_fails_liveness_and_webhooks_get_503(
    make_harness: MakeHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = await make_harness()
    assert (await h.client.get("/healthz")).status == 200
    assert writer_up(await (await h.client.get("/metrics")).text()) == "1.0"

    def crash(conn: sqlite3.Connection, jobs: object) -> None:
        raise RuntimeError("a bug in the writer")

    monkeypatch.setattr(h.journal, "_commit_signals", crash)
    for _ in range(2):  # the request that meets the crash, and every one after it
        resp = await h.client.post(WEBHOOK, data=orjson.dumps(payload([alert()])), headers=BEARER)
        assert resp.status == 503 and resp.headers["Retry-After"] == "7"
        assert "writer stopped" in (await resp.json())["error"]
    health = await h.client.get("/healthz")
    assert health.status == 503
    assert (await health.json()) == {
        "status": "unavailable",
        "checks": {"journal": "writer stopped; restart needed"},
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
