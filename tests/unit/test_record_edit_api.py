"""PATCH /api/v1/remediations/{id}/record over the real SQLite journal: the analysis of a
record (root cause, improvements, lessons) written by an operator, kept with its editor and
the time, and every client mistake a 400 naming the field."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from remediator.domain.auth import Role
from remediator.domain.record import (
    MAX_ANALYSIS_ITEM_CHARS,
    MAX_ANALYSIS_ITEMS,
    MAX_ROOT_CAUSE_CHARS,
)
from remediator.domain.rules import RulePack, load_rule_pack
from remediator.ingress.http import IntakeApp, IntakeState
from remediator.ingress.openapi import openapi_document
from remediator.journal.sqlite import SqliteJournal
from remediator.metrics import Metrics
from tests.contract.builders import NOW, Clock, plant
from tests.unit.auth_helpers import (
    OPERATOR_TOKEN,
    WEBHOOK_TOKEN,
    bearer,
    principal,
    standard_authenticator,
)
from tests.unit.test_openapi import check

READER_TOKEN = "reader-token-55aa0c1e3f7b9d2e4a6c8e0f"
TEMPLATE = "/api/v1/remediations/{id}/record"
CATALOG = """\
services:
  checkout:
    namespace: shop
    workload: checkout
    rollback: {strategy: rolling}
    owner: team-payments
"""


def stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def path(rid: str) -> str:
    return TEMPLATE.replace("{id}", rid)


@dataclass
class Api:
    client: TestClient
    journal: SqliteJournal
    clock: Clock
    rid: str

    async def edit(
        self, body: Any, token: str | None = OPERATOR_TOKEN, rid: str | None = None
    ) -> tuple[int, Any]:
        resp = await self.client.patch(
            path(rid or self.rid),
            headers=bearer(token) if token else {},
            data=io.BytesIO(body if isinstance(body, bytes) else orjson.dumps(body)),
        )
        answer = orjson.loads(await resp.read())
        check(openapi_document(), TEMPLATE, "patch", resp.status, answer)
        return resp.status, answer

    async def record(self) -> Any:
        resp = await self.client.get(
            path(self.rid), params={"format": "json"}, headers=bearer(READER_TOKEN)
        )
        assert resp.status == 200
        return orjson.loads(await resp.read())


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    clock = Clock()
    journal = SqliteJournal(path=tmp_path / "j.db", clock=clock)
    await journal.open()
    pack: RulePack = load_rule_pack({"catalog.yaml": CATALOG})
    intake = IntakeApp(
        journal=journal,
        metrics=Metrics(),
        auth=standard_authenticator(principal("reader", Role.READ, token=READER_TOKEN)),
        state=IntakeState(),
        service_labels=("service",),
        namespace_labels=("namespace",),
        body_limit_bytes=256 * 1024,
        retry_after_seconds=7,
        clock=clock,
        pack=pack,
    )
    client = TestClient(TestServer(intake.build()))
    await client.start_server()
    yield Api(client, journal, clock, await plant(journal))
    await client.close()
    await journal.close()


async def test_an_edit_is_kept_with_its_editor_and_time(api: Api) -> None:
    status, answer = await api.edit(
        {"root_cause": "  pool size 1 in v1.4.1  ", "lessons": ["roll back first", " "]}
    )
    assert status == 200, answer
    assert answer["remediation_id"] == api.rid
    assert answer["root_cause"] == "pool size 1 in v1.4.1"  # trimmed
    assert answer["lessons"] == ["roll back first"]  # blank items dropped
    assert answer["improvements"] == []
    assert answer["edited_by"] == "ops"  # the principal, never the body
    assert answer["edited_at"] == stamp(NOW)

    api.clock.advance(300)
    status, answer = await api.edit({"improvements": ["canary checks the pool"]})
    assert status == 200, answer
    # Fields not given are kept; the last editor and time are the record's.
    assert answer["root_cause"] == "pool size 1 in v1.4.1"
    assert answer["improvements"] == ["canary checks the pool"]
    assert answer["lessons"] == ["roll back first"]
    assert answer["edited_at"] == stamp(NOW + timedelta(minutes=5))

    record = await api.record()
    assert record["root_cause"] == "pool size 1 in v1.4.1"
    assert record["improvements"] == ["canary checks the pool"]
    assert record["lessons"] == ["roll back first"]
    assert record["analysis_edited_by"] == "ops"
    assert record["analysis_edited_at"] == stamp(NOW + timedelta(minutes=5))
    assert record["owner"] == "team-payments"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "body: give at least one of root_cause, improvements, lessons"),
        ([], "body: expected a JSON object"),
        (b"{not json", "body: not valid JSON"),
        ({"colour": "red"}, "'colour': unknown field (the body takes only root_cause,"),
        ({"by": "mallory"}, "'by': unknown field"),
        ({"edited_by": "mallory"}, "'edited_by': unknown field"),
        ({"edited_at": "2020-01-01T00:00:00Z"}, "'edited_at': unknown field"),
        ({"root_cause": 42}, "root_cause: expected a string, got a number"),
        ({"root_cause": None}, "root_cause: expected a string, got null"),
        ({"lessons": None}, "lessons: expected a list of strings, got null"),
        ({"lessons": "one lesson"}, "lessons: expected a list of strings"),
        ({"improvements": ["ok", 7]}, "improvements[1]: expected a string, got a number"),
        ({"root_cause": "x" * (MAX_ROOT_CAUSE_CHARS + 1)},
         f"root_cause: at most {MAX_ROOT_CAUSE_CHARS} characters"),
        ({"lessons": ["x" * (MAX_ANALYSIS_ITEM_CHARS + 1)]},
         f"lessons[0]: at most {MAX_ANALYSIS_ITEM_CHARS} characters"),
        ({"lessons": ["l"] * (MAX_ANALYSIS_ITEMS + 1)},
         f"lessons: at most {MAX_ANALYSIS_ITEMS} items"),
        ({"root_cause": "bell\x07"}, "root_cause: holds control characters"),
    ],
)  # fmt: skip
async def test_a_mistake_is_a_400_naming_the_field_and_changes_nothing(
    api: Api, body: Any, message: str
) -> None:
    status, answer = await api.edit(body)
    assert status == 400
    assert answer["error"].startswith(message), answer
    assert await api.journal.record_analysis(api.rid) is None


async def test_a_refused_edit_keeps_the_previous_analysis(api: Api) -> None:
    assert (await api.edit({"root_cause": "pool size"}))[0] == 200
    status, _ = await api.edit({"root_cause": "new", "by": "mallory"})
    assert status == 400
    kept = await api.journal.record_analysis(api.rid)
    assert kept is not None
    assert (kept.root_cause, kept.edited_by) == ("pool size", "ops")


@pytest.mark.parametrize(
    ("token", "status"),
    [(None, 401), ("wrong-token-0000000000000000000000", 401), (READER_TOKEN, 403),
     (WEBHOOK_TOKEN, 403)],
)  # fmt: skip
async def test_editing_needs_the_operate_role(api: Api, token: str | None, status: int) -> None:
    got, answer = await api.edit({"root_cause": "pool size"}, token=token)
    assert got == status, answer
    assert "error" in answer
    assert await api.journal.record_analysis(api.rid) is None


async def test_an_unknown_remediation_is_a_404(api: Api) -> None:
    status, answer = await api.edit({"root_cause": "pool size"}, rid="rem_unknown")
    assert status == 404
    assert answer["error"] == "id: no remediation 'rem_unknown'"
