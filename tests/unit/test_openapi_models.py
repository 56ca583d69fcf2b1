"""The OpenAPI document's request schemas are generated from the pydantic models the
handlers validate with: a body the document allows is one the handler takes, and the
other way round (``endsAt: null`` once disagreed)."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from remediator.domain.errors import InvalidInput
from remediator.ingress.alertmanager import AmAlert, AmPayload, parse_payload
from remediator.ingress.openapi import model_schemas, openapi_document
from tests.unit.payloads import alert, payload

DOCUMENT = openapi_document()


def documented_request(path: str) -> Draft202012Validator:
    operation = DOCUMENT["paths"][path]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    return Draft202012Validator({**schema, "components": DOCUMENT["components"]})


def handler_accepts(body: dict[str, Any]) -> bool:
    try:
        parse_payload(orjson.dumps(body))
    except InvalidInput:
        return False
    return True


def with_alert(**changes: Any) -> dict[str, Any]:
    one = alert()
    for key, value in changes.items():
        if value is ...:
            one.pop(key)
        else:
            one[key] = value
    return payload([one])


BODIES = {
    "as Alertmanager sends it": payload([alert()]),
    "endsAt null": with_alert(endsAt=None),
    "endsAt absent": with_alert(endsAt=...),
    "endsAt Go zero time": with_alert(endsAt="0001-01-01T00:00:00Z"),
    "endsAt a number": with_alert(endsAt=1700000000),
    "startsAt absent": with_alert(startsAt=...),
    "label value not a string": with_alert(labels={"service": 5}),
    "status unknown": with_alert(status="pending"),
    "unknown field": with_alert(silenced=True),
    "truncatedAlerts negative": {**payload([alert()]), "truncatedAlerts": -1},
    "truncatedAlerts counted": {**payload([alert()]), "truncatedAlerts": 3},
    "alerts not a list": {**payload([alert()]), "alerts": {}},
    "receiver absent": {k: v for k, v in payload([alert()]).items() if k != "receiver"},
    "version 3": {**payload([alert()]), "version": "3"},
}


@pytest.mark.parametrize("body", BODIES.values(), ids=list(BODIES))
def test_webhook_document_and_handler_agree(body: dict[str, Any]) -> None:
    documented = documented_request("/api/v1/webhooks/alertmanager").is_valid(body)
    assert documented is handler_accepts(body)


def test_both_verdicts_occur() -> None:
    verdicts = {name: handler_accepts(body) for name, body in BODIES.items()}
    assert verdicts["endsAt null"] and verdicts["endsAt absent"]
    assert not verdicts["endsAt a number"] and not verdicts["truncatedAlerts negative"]


def test_request_schemas_are_the_models_schemas() -> None:
    schemas = DOCUMENT["components"]["schemas"]
    assert schemas["AlertmanagerPayload"] == model_schemas()["AlertmanagerPayload"]
    generated = AmAlert.model_json_schema()["properties"]
    assert schemas["AlertmanagerAlert"]["properties"].keys() == generated.keys()
    alerts = schemas["AlertmanagerPayload"]["properties"]["alerts"]
    assert alerts["items"] == {"$ref": "#/components/schemas/AlertmanagerAlert"}
    assert set(AmPayload.model_fields) == set(schemas["AlertmanagerPayload"]["properties"])


def test_every_reference_resolves() -> None:
    text = orjson.dumps(DOCUMENT).decode()
    names = set(DOCUMENT["components"]["schemas"])
    referenced = set(re.findall(r'"#/components/schemas/([^"]+)"', text))
    assert referenced <= names


# -- the API's own bodies ------------------------------------------------------------------

API_BODIES: dict[str, tuple[type[Any], str, dict[str, Any]]] = {}


def _api_bodies() -> None:
    from remediator.ingress.bodies import CommentBody, RecordAnalysisBody, RollbackRequestBody

    ask = {"service": "checkout", "scenario": "data_consistency", "reason": "rows lost"}
    cases: dict[str, tuple[type[Any], dict[str, Any]]] = {
        "request": (RollbackRequestBody, ask),
        "request with target and emergency": (
            RollbackRequestBody, {**ask, "target": "41", "emergency": True},
        ),
        "request target null": (RollbackRequestBody, {**ask, "target": None}),
        "request unknown scenario": (RollbackRequestBody, {**ask, "scenario": "boredom"}),
        "request emergency as a string": (RollbackRequestBody, {**ask, "emergency": "true"}),
        "request reason too long": (RollbackRequestBody, {**ask, "reason": "x" * 501}),
        "request reason with a NUL": (RollbackRequestBody, {**ask, "reason": "a\x00b"}),
        "request reason of lines": (RollbackRequestBody, {**ask, "reason": "a\r\nb\tc"}),
        "request service with a line break": (RollbackRequestBody, {**ask, "service": "a\nb"}),
        "request requester field": (RollbackRequestBody, {**ask, "requester": "mallory"}),
        "request without reason": (
            RollbackRequestBody, {k: v for k, v in ask.items() if k != "reason"},
        ),
        "comment": (CommentBody, {"comment": "checked with the team"}),
        "comment null": (CommentBody, {"comment": None}),
        "no comment": (CommentBody, {}),
        "comment a number": (CommentBody, {"comment": 5}),
        "comment and by": (CommentBody, {"comment": "x", "by": "mallory"}),
        "analysis": (RecordAnalysisBody, {"root_cause": "pool of 1", "lessons": ["a", "b"]}),
        "analysis empty": (RecordAnalysisBody, {}),
        "analysis root cause null": (RecordAnalysisBody, {"root_cause": None}),
        "analysis cleared": (RecordAnalysisBody, {"root_cause": "", "lessons": []}),
        "analysis 51 lessons": (RecordAnalysisBody, {"lessons": ["x"] * 51}),
        "analysis lesson a number": (RecordAnalysisBody, {"lessons": [1]}),
        "analysis editor field": (RecordAnalysisBody, {"root_cause": "x", "edited_by": "m"}),
    }  # fmt: skip
    names = {"RollbackRequestBody": "RollbackRequest", "CommentBody": "Comment",
             "RecordAnalysisBody": "RecordAnalysisEdit"}  # fmt: skip
    for case, (model, body) in cases.items():
        API_BODIES[case] = (model, names[model.__name__], body)


_api_bodies()


@pytest.mark.parametrize("case", list(API_BODIES))
def test_the_document_and_the_api_agree_on_each_body(case: str) -> None:
    from remediator.ingress.bodies import parse

    model, component, body = API_BODIES[case]
    validator = Draft202012Validator(
        {"$ref": f"#/components/schemas/{component}", "components": DOCUMENT["components"]}
    )
    documented = validator.is_valid(body)
    try:
        parse(model, body)
        accepted = True
    except InvalidInput:
        accepted = False
    assert documented == accepted, (case, documented, accepted)


def test_the_api_bodies_are_generated_from_their_models() -> None:
    from remediator.ingress.bodies import CommentBody, RecordAnalysisBody, RollbackRequestBody

    schemas = model_schemas()
    for component, model in (("RollbackRequest", RollbackRequestBody), ("Comment", CommentBody),
                             ("RecordAnalysisEdit", RecordAnalysisBody)):  # fmt: skip
        assert schemas[component]["properties"].keys() == model.model_fields.keys()
    paths = DOCUMENT["paths"]
    body = paths["/api/v1/rollback-requests"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/RollbackRequest"
    }
    patch = paths["/api/v1/remediations/{id}/record"]["patch"]["requestBody"]
    assert patch["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/RecordAnalysisEdit"
    }
