"""``remediator services`` over the API (a scripted stand-in on a real port)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from jsonschema import Draft202012Validator

from remediator.ingress.openapi import openapi_document
from tests.unit.cli.conftest import TOKEN, Cli
from tests.unit.cli.fakeapi import FakeApi, json_reply

OUTCOMES = {"plans": 0, "succeeded": 0, "failed": 0, "needs_human": 0, "would_have_run": 0,
            "median_seconds_to_recover": None}  # fmt: skip
LISTING: dict[str, Any] = {
    "window": {
        "days": 30,
        "since": "2026-10-28T10:00:00.000000Z",
        "until": "2026-11-27T10:00:00.000000Z",
    },
    "items": [
        {
            "service": "checkout",
            "namespace": "shop",
            "automation": "approve",
            "automation_changed": {
                "at": "2026-11-20T09:00:00.000000Z",
                "by": "rules /etc/remediator/rules (sha256:0123456789ab)",
                "from": "notify",
                "to": "approve",
            },
            "last_30_days": {
                **OUTCOMES,
                "plans": 12,
                "succeeded": 10,
                "failed": 1,
                "needs_human": 1,
                "median_seconds_to_recover": 262.5,
            },
        },
        {
            "service": "search",
            "namespace": "search",
            "automation": "notify",
            "automation_changed": None,
            "last_30_days": {**OUTCOMES, "would_have_run": 4},
        },
    ],
}


def test_the_listing_fits_the_document() -> None:
    # The stand-in's answer is one the daemon may give.
    doc = openapi_document()
    schema = doc["paths"]["/api/v1/services"]["get"]["responses"]["200"]["content"]
    validator = Draft202012Validator(
        {**schema["application/json"]["schema"], "components": doc["components"]}
    )
    validator.validate(LISTING)


def test_services_prints_each_level_with_its_evidence(
    cli: Cli, api: FakeApi, token_file: Path
) -> None:
    api.respond = lambda seen: json_reply(200, LISTING)
    code, out, err = cli("services", "--url", api.url, "--token-file", str(token_file))
    assert (code, err) == (0, "")
    [seen] = api.seen
    assert (seen.method, seen.path, seen.query) == ("GET", "/api/v1/services", {})
    assert seen.headers["authorization"] == f"Bearer {TOKEN}"
    header, checkout, search = out.splitlines()
    assert header.split() == ["SERVICE", "NAMESPACE", "LEVEL", "PLANS", "OK", "FAILED", "HUMAN",
                              "WOULD", "MTTR", "CHANGED"]  # fmt: skip
    assert checkout.split()[:9] == ["checkout", "shop", "approve", "12", "10", "1", "1", "0",
                                    "4m22s"]  # fmt: skip
    assert checkout.endswith(
        "2026-11-20T09:00:00.000000Z notify -> approve by rules /etc/remediator/rules "
        "(sha256:0123456789ab)"
    )
    assert search.split() == ["search", "search", "notify", "0", "0", "0", "0", "4", "-", "-"]
    assert TOKEN not in out


def test_json_prints_the_document(cli: Cli, api: FakeApi, token_file: Path) -> None:
    api.respond = lambda seen: json_reply(200, LISTING)
    code, out, _ = cli("services", "--json", "--url", api.url, "--token-file", str(token_file))
    assert code == 0
    assert orjson.loads(out) == LISTING


def test_without_the_api_it_says_what_to_give(cli: Cli) -> None:
    code, out, err = cli("services")
    assert (code, out) == (2, "")
    assert err == (
        "remediator: services asks the running daemon (its catalog and its journal): give "
        "--url or set $REMEDIATOR_URL\n"
    )


def test_a_principal_without_read_gets_one_line(cli: Cli, api: FakeApi, token_file: Path) -> None:
    api.respond = lambda seen: json_reply(
        403, {"error": "forbidden: role 'read' required; principal 'hook' holds ingest"}
    )
    code, out, err = cli("services", "--url", api.url, "--token-file", str(token_file))
    assert (code, out) == (2, "")
    assert err == "remediator: forbidden: role 'read' required; principal 'hook' holds ingest\n"
