"""The OpenAPI document must describe exactly the routes served, and real responses must fit it."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from jsonschema import Draft202012Validator

from remediator.domain.auth import Role
from remediator.ingress.auth import Authenticator, FailedAuthLimiter, WebhookCredential
from remediator.ingress.http import IntakeApp, IntakeState
from remediator.ingress.openapi import openapi_document
from remediator.journal.sqlite import SqliteJournal
from remediator.metrics import Metrics
from tests.unit.auth_helpers import OPERATOR_TOKEN, bearer, principal
from tests.unit.payloads import alert, payload

AUTH = {"Authorization": "Bearer t"}  # the webhook's: ingest only
API = bearer(OPERATOR_TOKEN)  # read and operate
READER = bearer("reader-token-0123456789abcdef0123456789")


def authenticator() -> Authenticator:
    return Authenticator(
        principals=[
            principal("ops", Role.READ, Role.OPERATE, token=OPERATOR_TOKEN),
            principal("reader", Role.READ, token=READER["Authorization"].split()[1]),
        ],
        webhook=WebhookCredential(bearer_token="t"),
    )


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[TestClient]:
    journal = SqliteJournal(path=tmp_path / "j.db")
    await journal.open()
    intake = IntakeApp(
        journal=journal,
        metrics=Metrics(),
        auth=authenticator(),
        state=IntakeState(),
        service_labels=("service",),
        namespace_labels=("namespace",),
        body_limit_bytes=4096,
        retry_after_seconds=1,
        failed_auth=FailedAuthLimiter(max_failures=3, window_seconds=60, max_clients=10),
    )
    c = TestClient(TestServer(intake.build()))
    await c.start_server()
    yield c
    await c.close()
    await journal.close()


def check(doc: dict[str, Any], path: str, method: str, status: int, body: Any) -> None:
    operation = doc["paths"][path][method]
    response = operation["responses"][str(status)]  # KeyError: undocumented status
    schema = next(iter(response["content"].values()))["schema"]
    validator = Draft202012Validator({**schema, "components": doc["components"]})
    errors = list(validator.iter_errors(body))
    assert not errors, f"{method.upper()} {path} {status}: {errors[0].message}"


async def test_documented_paths_are_exactly_the_served_routes(client: TestClient) -> None:
    doc = openapi_document()
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in client.server.app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert served == documented


async def test_served_document_is_the_document(client: TestClient) -> None:
    resp = await client.get("/api/v1/openapi.json")
    assert resp.status == 200
    assert await resp.json() == orjson.loads(orjson.dumps(openapi_document()))
    Draft202012Validator.check_schema({"$defs": openapi_document()["components"]["schemas"]})


async def test_real_responses_match_their_schemas(client: TestClient) -> None:
    doc = openapi_document()
    hook = "/api/v1/webhooks/alertmanager"

    async def post(body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        resp = await client.post(hook, data=io.BytesIO(body), headers=headers)
        return resp.status, await resp.json()

    good = orjson.dumps(payload([alert(fingerprint="a")]))
    for status, body in [
        await post(good, AUTH),
        await post(b"{", AUTH),
        await post(good, {}),
        await post(b"x" * 5000, AUTH),
    ]:
        check(doc, hook, "post", status, body)
    assert {s for s, _ in [await post(good, AUTH)]} == {200}

    late = payload([alert(fingerprint="b", starts_at="0001-01-01T00:10:00+01:00")])
    status, body = await post(orjson.dumps(late), AUTH)
    assert status == 400 and body["error"].startswith("alerts[0].startsAt: ")
    check(doc, hook, "post", status, body)

    for path in ("/api/v1/signals", "/api/v1/remediations"):
        for params, expected in [
            ({}, 200),
            ({"limit": "0"}, 400),
            ({"cursor": "²"}, 400),
            ({"cursor": "9" * 5000}, 400),
            ({"service": "a\x00"}, 400),
        ]:
            resp = await client.get(path, params=params, headers=API)
            assert resp.status == expected
            check(doc, path, "get", resp.status, await resp.json())
    resp = await client.get("/api/v1/remediations", params={"status": "planned"}, headers=API)
    assert resp.status == 200
    check(doc, "/api/v1/remediations", "get", 200, await resp.json())
    resp = await client.get("/api/v1/remediations", params={"status": "bogus"}, headers=API)
    assert resp.status == 400
    assert "status: must be one of" in (await resp.json())["error"]
    check(doc, "/api/v1/remediations", "get", 400, await resp.json())
    resp = await client.get("/api/v1/remediations/rem_nope", headers=API)
    assert resp.status == 404
    check(doc, "/api/v1/remediations/{id}", "get", 404, await resp.json())
    resp = await client.get("/api/v1/remediations/rem_nope/record", headers=API)
    assert resp.status == 404
    check(doc, "/api/v1/remediations/{id}/record", "get", 404, await resp.json())
    resp = await client.get("/api/v1/remediations/x/record?format=pdf", headers=API)
    assert resp.status == 400
    check(doc, "/api/v1/remediations/{id}/record", "get", 400, await resp.json())
    approve = "/api/v1/remediations/{id}/approve"
    resp = await client.post(
        "/api/v1/remediations/rem_nope/approve", json={"comment": "a"}, headers=API
    )
    assert resp.status == 404
    check(doc, approve, "post", 404, await resp.json())
    resp = await client.post("/api/v1/remediations/rem_nope/approve", json={"by": "a"}, headers=API)
    assert resp.status == 400 and (await resp.json())["error"].startswith("by:")
    check(doc, approve, "post", 400, await resp.json())
    resp = await client.post("/api/v1/remediations/rem_nope/approve", data=b"[" * 5000, headers=API)
    assert resp.status == 413
    check(doc, approve, "post", 413, await resp.json())
    for headers in (READER, AUTH):  # no operate role
        resp = await client.post("/api/v1/remediations/rem_nope/approve", json={}, headers=headers)
        assert resp.status == 403
        check(doc, approve, "post", 403, await resp.json())
    resp = await client.get("/api/v1/circuit", headers=API)
    check(doc, "/api/v1/circuit", "get", resp.status, await resp.json())
    resp = await client.post("/api/v1/circuit/reset", headers=READER)
    assert resp.status == 403
    check(doc, "/api/v1/circuit/reset", "post", 403, await resp.json())
    resp = await client.post("/api/v1/circuit/reset", headers=API)
    body = await resp.json()
    assert resp.status == 200 and body["open"] is False and body["changed_at"]
    assert body["changed_by"] == "ops"
    check(doc, "/api/v1/circuit/reset", "post", resp.status, body)
    resp = await client.get("/api/v1/signals", headers=API)
    signals = await resp.json()
    assert signals["items"][0]["received_by"] == "webhook"
    check(doc, "/api/v1/signals", "get", 200, signals)
    for path in ("/healthz", "/readyz"):
        resp = await client.get(path)
        check(doc, path, "get", resp.status, await resp.json())
    metrics = await client.get("/metrics")
    assert metrics.status == 200 and metrics.content_type == "text/plain"
    # Last: the webhook post without a credential above failed once; two more failures
    # make three, and the address is throttled.
    for _ in range(2):
        resp = await client.get("/api/v1/circuit", headers=bearer("wrong"))
        assert resp.status == 401
        check(doc, "/api/v1/circuit", "get", 401, await resp.json())
    for path, method in [("/api/v1/circuit", "get"), (hook, "post")]:
        resp = await client.request(method, path, headers=API)
        assert resp.status == 429 and resp.headers["Retry-After"] == "60"
        check(doc, path, method, 429, await resp.json())


async def test_a_malformed_authorization_answer_matches_the_document(client: TestClient) -> None:
    server = client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(
        b"GET /api/v1/circuit HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
        b"Authorization: Bearer \xff\xfe\r\n\r\n"
    )
    await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401 ")
    assert b"WWW-Authenticate: Bearer" in head
    check(openapi_document(), "/api/v1/circuit", "get", 401, orjson.loads(body))


async def test_an_internal_error_answer_matches_the_document(tmp_path: Path) -> None:
    journal = SqliteJournal(path=tmp_path / "j.db")
    await journal.open()

    class Broken:
        def __getattr__(self, name: str) -> Any:
            if name == "list_remediations":

                async def fail(**kwargs: Any) -> Any:
                    raise KeyError("a bug")

                return fail
            return getattr(journal, name)

    intake = IntakeApp(
        journal=Broken(),  # type: ignore[arg-type]
        metrics=Metrics(),
        auth=authenticator(),
        state=IntakeState(),
        service_labels=("service",),
        namespace_labels=("namespace",),
        body_limit_bytes=4096,
        retry_after_seconds=1,
    )
    c = TestClient(TestServer(intake.build()))
    await c.start_server()
    try:
        resp = await c.get("/api/v1/remediations", headers=API)
        assert resp.status == 500
        check(openapi_document(), "/api/v1/remediations", "get", 500, await resp.json())
    finally:
        await c.close()
        await journal.close()
