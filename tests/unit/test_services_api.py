"""GET /api/v1/services over the real SQLite journal, with an injected clock: each
catalog service with its level, its last change, and its last 30 days."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from remediator.domain.auth import Role
from remediator.domain.automation import AutomationLevel
from remediator.domain.errors import TemporaryError
from remediator.domain.lifecycle import RemediationStatus
from remediator.domain.rules import RulePack, load_rule_pack
from remediator.ingress.http import IntakeApp, IntakeState
from remediator.ingress.openapi import openapi_document
from remediator.ingress.services import ServicesView
from remediator.journal.sqlite import SqliteJournal
from remediator.metrics import Metrics
from tests.contract.builders import NOW, Clock, ended_remediation
from tests.unit.auth_helpers import (
    OPERATOR_TOKEN,
    WEBHOOK_TOKEN,
    bearer,
    principal,
    standard_authenticator,
)
from tests.unit.test_openapi import check

S = RemediationStatus
READER_TOKEN = "reader-token-55aa0c1e3f7b9d2e4a6c8e0f"
PATH = "/api/v1/services"
CATALOG = """\
services:
  checkout:
    namespace: shop
    workload: checkout
    rollback: {strategy: rolling}
    automation: approve
  search:
    namespace: search
    workload: search
    rollback: {strategy: rolling}
    automation: notify
  web:
    namespace: web
    workload: web
    rollback: {strategy: helm, release: web}
"""


@pytest.fixture
def pack() -> RulePack:
    return load_rule_pack({"catalog.yaml": CATALOG})


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[SqliteJournal]:
    opened = SqliteJournal(path=tmp_path / "j.db", clock=Clock())
    await opened.open()
    yield opened
    await opened.close()


async def client_for(journal: Any, pack: RulePack, clock: Clock) -> TestClient:
    intake = IntakeApp(
        journal=journal,
        metrics=Metrics(),
        auth=standard_authenticator(principal("reader", Role.READ, token=READER_TOKEN)),
        state=IntakeState(),
        service_labels=("service",),
        namespace_labels=("namespace",),
        body_limit_bytes=4096,
        retry_after_seconds=7,
        clock=clock,
        services=ServicesView(journal=journal, pack=pack, clock=clock),
    )
    client = TestClient(TestServer(intake.build()))
    await client.start_server()
    return client


async def listed(client: TestClient, token: str = READER_TOKEN) -> tuple[int, Any]:
    resp = await client.get(PATH, headers=bearer(token))
    body = await resp.json()
    check(openapi_document(), PATH, "get", resp.status, body)
    return resp.status, body


async def test_each_catalog_service_with_its_level_change_and_last_30_days(
    journal: SqliteJournal, pack: RulePack
) -> None:
    origin = "rules /etc/remediator/rules (sha256:0123456789ab)"
    await journal.record_automation_levels(
        {"checkout": AutomationLevel.NOTIFY, "search": AutomationLevel.NOTIFY},
        by="rules old",
        at=NOW - timedelta(days=40),
    )
    await journal.record_automation_levels(
        {name: pack.automation(name) for name in pack.services}, by=origin, at=NOW
    )
    for minutes in (3, 5, 30):
        await ended_remediation(journal, S.SUCCEEDED, recovered_after=timedelta(minutes=minutes))
    await ended_remediation(journal, S.FAILED)
    await ended_remediation(journal, S.AWAITING_APPROVAL)
    await ended_remediation(journal, S.SKIPPED, service="search", reason="automation_notify")
    # Created before the window (now - 30 days) or by a service the catalog lost: not shown.
    await ended_remediation(journal, S.FAILED, created_at=NOW - timedelta(days=31))
    await ended_remediation(journal, S.SUCCEEDED, service="retired")
    clock = Clock(NOW + timedelta(days=1))
    client = await client_for(journal, pack, clock)
    try:
        status, body = await listed(client)
    finally:
        await client.close()
    assert status == 200
    assert body["window"] == {
        "days": 30,
        "since": "2026-10-29T10:00:00.000000Z",
        "until": "2026-11-28T10:00:00.000000Z",
    }
    by_name = {item["service"]: item for item in body["items"]}
    assert list(by_name) == ["checkout", "search", "web"]
    checkout = by_name["checkout"]
    assert (checkout["namespace"], checkout["automation"]) == ("shop", "approve")
    assert checkout["automation_changed"] == {
        "at": "2026-11-27T10:00:00.000000Z",
        "by": origin,
        "from": "notify",
        "to": "approve",
    }
    assert checkout["last_30_days"] == {
        "plans": 5,
        "succeeded": 3,
        "failed": 1,
        "needs_human": 0,
        "would_have_run": 0,
        "median_seconds_to_recover": 300.0,
    }
    search = by_name["search"]
    assert search["automation"] == "notify"
    assert search["automation_changed"]["at"] == "2026-10-18T10:00:00.000000Z"  # unchanged since
    assert search["last_30_days"]["would_have_run"] == 1
    assert search["last_30_days"]["plans"] == 0
    web = by_name["web"]
    assert web["automation"] == "auto"
    assert web["automation_changed"] == {
        "at": "2026-11-27T10:00:00.000000Z", "by": origin, "from": None, "to": "auto",
    }  # fmt: skip
    assert web["last_30_days"]["median_seconds_to_recover"] is None


async def test_the_window_moves_with_the_clock(journal: SqliteJournal, pack: RulePack) -> None:
    await ended_remediation(journal, S.FAILED)
    clock = Clock(NOW + timedelta(days=30))  # since == its creation: still in
    client = await client_for(journal, pack, clock)
    try:
        _, within = await listed(client)
        clock.advance(1e-6)
        _, after = await listed(client)
    finally:
        await client.close()
    assert within["items"][0]["last_30_days"]["failed"] == 1
    assert after["items"][0]["last_30_days"]["failed"] == 0


async def test_nothing_recorded_yet_shows_no_change(journal: SqliteJournal, pack: RulePack) -> None:
    client = await client_for(journal, pack, Clock())
    try:
        status, body = await listed(client, OPERATOR_TOKEN)
    finally:
        await client.close()
    assert status == 200
    assert [item["automation_changed"] for item in body["items"]] == [None, None, None]


async def test_it_asks_for_the_read_role(journal: SqliteJournal, pack: RulePack) -> None:
    client = await client_for(journal, pack, Clock())
    try:
        assert (await listed(client, WEBHOOK_TOKEN))[0] == 403  # ingest only
        assert (await client.get(PATH)).status == 401
    finally:
        await client.close()


async def test_an_unavailable_journal_is_a_503_with_retry_after(
    journal: SqliteJournal, pack: RulePack
) -> None:
    class Unavailable:
        def __getattr__(self, name: str) -> Any:
            if name == "service_outcomes":

                async def fail(**kwargs: Any) -> Any:
                    raise TemporaryError("journal: disk I/O error", delay=1.0)

                return fail
            return getattr(journal, name)

    client = await client_for(Unavailable(), pack, Clock())
    try:
        resp = await client.get(PATH, headers=bearer(READER_TOKEN))
        assert (resp.status, resp.headers["Retry-After"]) == (503, "7")
        body = await resp.json()
        check(openapi_document(), PATH, "get", 503, body)
        assert "disk I/O error" in body["error"]
    finally:
        await client.close()
