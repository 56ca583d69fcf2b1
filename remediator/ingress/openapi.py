"""The OpenAPI 3.1 description of the HTTP API. tests/unit/test_openapi.py keeps it true."""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel

import remediator
from remediator.domain.automation import AutomationLevel
from remediator.domain.lifecycle import RemediationStatus
from remediator.ingress.alertmanager import AmAlert, AmPayload
from remediator.ingress.bodies import CommentBody, RecordAnalysisBody, RollbackRequestBody

_REMEDIATION_STATUSES = [status.value for status in RemediationStatus]
_AUTOMATION_LEVELS = [level.value for level in AutomationLevel]
_ERROR = {"$ref": "#/components/schemas/Error"}
_RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "string"}}
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response = {"description": description, **_json(_ERROR)}
    if headers:
        response["headers"] = headers
    return response


_UNAUTHORIZED = _error(
    "Missing, malformed or wrong credentials (a bearer token of a principal, the webhook's "
    "basic-auth pair, or a client certificate mapped to a principal).",
    {"WWW-Authenticate": {"description": "Accepted schemes.", "schema": {"type": "string"}}},
)
_THROTTLED = _error(
    "Too many failed authentications from this client address (auth.max_failures within "
    "auth.failure_window_seconds); the credential was not looked at.",
    _RETRY_AFTER,
)


def _forbidden(role: str) -> dict[str, Any]:
    return _error(
        f"The principal lacks the `{role}` role; the message names the role and what the "
        "principal holds."
    )


_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_COMMENT_BODY = {"required": False, **_json({"$ref": "#/components/schemas/Comment"})}
_COMMENT_400 = (
    "The body is not a JSON object with at most a `comment` (up to 500 characters, no "
    "control characters but line breaks); a `by` field is refused: who acts is the "
    "credential's principal."
)


def _answer(summary: str, description: str, ok: str, forbidden: str, conflict: str) -> Any:
    """An approve, reject, cancel or review operation: POST with an optional comment."""
    return {
        "post": {
            "summary": summary,
            "description": description,
            "security": _SECURED,
            "x-required-role": "operate",
            "parameters": [_ID],
            "requestBody": _COMMENT_BODY,
            "responses": {
                "200": {"description": ok, **_json({"$ref": "#/components/schemas/Remediation"})},
                "400": _error(_COMMENT_400),
                "403": _error(forbidden),
                "404": _error("No remediation with that id."),
                "409": _error(conflict),
                "413": _error("The body is larger than http.body_limit_bytes."),
                "503": _error("Journal unavailable.", _RETRY_AFTER),
            },
        }
    }


def _guarded(role: str, responses: dict[str, Any]) -> dict[str, Any]:
    """The answers every route that asks for a role may give, besides its own."""
    return {"401": _UNAUTHORIZED, "403": _forbidden(role), "429": _THROTTLED, **responses}


_INTERNAL = {
    "description": "Unexpected server error; error_id finds its line in the server log.",
    **_json({"$ref": "#/components/schemas/InternalError"}),
}
_CURSOR = {
    "name": "cursor",
    "in": "query",
    "description": "The `next` of an earlier page.",
    "schema": {"type": "string", "pattern": "^[0-9]{1,19}$"},
}
_SERVICE = {
    "name": "service",
    "in": "query",
    "schema": {"type": "string", "pattern": "^[^\\x00-\\x1f\\x7f]*$"},
}
_TIME_RANGE = "Within 1970-01-01T00:00:00Z .. 9000-01-01T00:00:00Z once converted to UTC."

# Principals use bearer tokens or client certificates; basic auth is the webhook's only.
_SECURED: list[dict[str, list[str]]] = [{"bearer": []}, {"mutualTLS": []}]
_WEBHOOK_SECURED: list[dict[str, list[str]]] = [{"bearer": []}, {"basic": []}, {"mutualTLS": []}]
_LIMIT = {
    "name": "limit",
    "in": "query",
    "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50},
}
_CIRCUIT = {"$ref": "#/components/schemas/Circuit"}

_REF = "#/components/schemas/{model}"
# The pydantic models the handlers validate request bodies with, by their name here.
_MODELS: dict[str, type[BaseModel]] = {
    "AlertmanagerPayload": AmPayload,
    "AlertmanagerAlert": AmAlert,
    "RollbackRequest": RollbackRequestBody,
    "Comment": CommentBody,
    "RecordAnalysisEdit": RecordAnalysisBody,
}


@functools.cache
def model_schemas() -> dict[str, Any]:
    """The component schemas of _MODELS, generated from the models: the document cannot
    drift from what the handlers accept."""
    names = {model.__name__: name for name, model in _MODELS.items()}
    schemas: dict[str, Any] = {}
    for name, model in _MODELS.items():
        schema = model.model_json_schema(ref_template=_REF, mode="validation")
        schema.pop("$defs", None)  # each nested model is listed in _MODELS itself
        schemas[name] = _renamed(schema, names)
    return schemas


def _renamed(node: Any, names: dict[str, str]) -> Any:
    """References and titles use the component names (AmAlert -> AlertmanagerAlert)."""
    if isinstance(node, dict):
        out = {key: _renamed(value, names) for key, value in node.items()}
        ref = out.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
            model = ref.rsplit("/", 1)[1]
            out["$ref"] = _REF.format(model=names[model])
        if isinstance(out.get("title"), str) and out["title"] in names:
            out["title"] = names[out["title"]]
        return out
    if isinstance(node, list):
        return [_renamed(item, names) for item in node]
    return node


_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string", "description": "What was wrong, and where."}},
    },
    "InternalError": {
        "type": "object",
        "required": ["error", "error_id"],
        "properties": {
            "error": {"type": "string"},
            "error_id": {"type": "string", "description": "Also in the server's log line."},
        },
    },
    "WebhookAccepted": {
        "type": "object",
        "required": ["accepted", "duplicates", "signal_ids"],
        "properties": {
            "accepted": {"type": "integer", "minimum": 0, "description": "Alerts newly journaled."},
            "duplicates": {
                "type": "integer",
                "minimum": 0,
                "description": "Alerts whose idempotency key was already journaled.",
            },
            "signal_ids": {
                "type": "array",
                "items": {"type": "string"},
                "description": "One id per alert, in payload order (duplicates included).",
            },
        },
    },
    "Signal": {
        "type": "object",
        "required": [
            "id",
            "source",
            "kind",
            "status",
            "service",
            "namespace",
            "routable",
            "labels",
            "annotations",
            "starts_at",
            "ends_at",
            "received_at",
        ],
        "properties": {
            "id": {"type": "string"},
            "source": {"enum": ["alertmanager", "kafka", "manual"]},
            "kind": {"type": "string", "description": "alertname or event type"},
            "status": {"enum": ["firing", "resolved", "event"]},
            "service": {"type": ["string", "null"]},
            "namespace": {"type": ["string", "null"]},
            "routable": {"type": "boolean", "description": "false when no service was resolved"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            "starts_at": {"type": ["string", "null"], "format": "date-time"},
            "ends_at": {"type": ["string", "null"], "format": "date-time"},
            "received_at": {"type": "string", "format": "date-time"},
            "received_by": {
                "type": ["string", "null"],
                "description": "The principal that sent it (null: Kafka, or journaled earlier).",
            },
        },
    },
    "SignalPage": {
        "type": "object",
        "required": ["items", "next"],
        "properties": {
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/Signal"}},
            "next": {
                "type": ["string", "null"],
                "description": "Pass as `cursor` for the next (older) page; null on the last. "
                "A page holds fewer than `limit` items when they would pass "
                "limits.response_bytes: the rest is on the next page, never dropped.",
            },
        },
    },
    "Remediation": {
        "type": "object",
        "required": [
            "id",
            "signal_id",
            "service",
            "namespace",
            "rule",
            "action",
            "status",
            "reason",
            "manual",
            "automated",
            "created_at",
            "updated_at",
            "explanation",
        ],
        "properties": {
            "id": {"type": "string"},
            "signal_id": {"type": "string", "description": "The signal that led here."},
            "service": {"type": "string"},
            "namespace": {"type": ["string", "null"]},
            "rule": {"type": ["string", "null"]},
            "action": {"type": ["string", "null"], "description": "rollback, scale_up, ..."},
            "status": {"enum": _REMEDIATION_STATUSES},
            "reason": {"type": ["string", "null"], "description": "Why it was skipped."},
            "manual": {"type": "boolean"},
            "automated": {"type": "boolean"},
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
            "explanation": {"type": "string", "description": "As `rules explain` prints it."},
            "decision": {
                "type": "object",
                "description": "The full decision (plan steps with reasons); detail view only.",
            },
            "approved_by": {
                "type": ["string", "null"],
                "description": "The principal that approved (break-glass: local:<user>).",
            },
            "approved_at": {"type": ["string", "null"], "format": "date-time"},
            "approved_as": {
                "type": ["array", "null"],
                "items": {"type": "string"},
                "description": "The plan's approver roles the approver holds.",
            },
            "approval_comment": {"type": ["string", "null"]},
            "approval": {"$ref": "#/components/schemas/Approval"},
        },
    },
    "Approval": {
        "type": "object",
        "description": "A plan that needed approval: the request, the policy, the answers "
        "(detail views only).",
        "required": [
            "requester",
            "emergency",
            "required",
            "state",
            "missing",
            "approvers",
            "votes",
            "response_due_at",
            "expires_at",
            "response",
            "review",
        ],
        "properties": {
            "requester": {
                "type": ["string", "null"],
                "description": "The principal that asked (null: an alert's plan).",
            },
            "scenario": {"type": ["string", "null"]},
            "reason": {"type": ["string", "null"]},
            "target": {"type": ["string", "null"]},
            "emergency": {"type": "boolean"},
            "required": {
                "type": "array",
                "items": {"type": "string"},
                "description": "One seat per approver role, each filled by a distinct "
                "principal (`a or b`: either role; `any approver`: anyone with operate).",
            },
            "response_time_seconds": {"type": "number"},
            "requested_at": {"type": "string", "format": "date-time"},
            "response_due_at": {
                "type": "string",
                "format": "date-time",
                "description": "Past it the request is escalated.",
            },
            "expires_at": {
                "type": "string",
                "format": "date-time",
                "description": "Past it the plan ends expired and never runs.",
            },
            "escalated_at": {"type": ["string", "null"], "format": "date-time"},
            "state": {"enum": ["pending", "approved", "rejected"]},
            "missing": {"type": "array", "items": {"type": "string"}},
            "approvers": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["role", "principal", "at"],
                    "properties": {
                        "role": {"type": "string"},
                        "principal": {"type": "string"},
                        "at": {"type": "string", "format": "date-time"},
                    },
                },
            },
            "votes": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["principal", "verdict", "roles", "at"],
                    "properties": {
                        "principal": {"type": "string"},
                        "verdict": {"enum": ["approve", "reject"]},
                        "roles": {"type": "array", "items": {"type": "string"}},
                        "at": {"type": "string", "format": "date-time"},
                        "comment": {"type": ["string", "null"]},
                    },
                },
            },
            "response": {"enum": ["met", "missed", "pending"]},
            "review": {
                "type": "object",
                "required": ["status"],
                "properties": {
                    "status": {"enum": ["none", "owed", "closed"]},
                    "closed_by": {"type": ["string", "null"]},
                    "closed_at": {"type": ["string", "null"], "format": "date-time"},
                    "comment": {"type": ["string", "null"]},
                },
            },
        },
    },
    "RequestAccepted": {
        "type": "object",
        "required": ["id", "signal_id", "status"],
        "properties": {
            "id": {"type": "string", "description": "The remediation it will open."},
            "signal_id": {"type": "string"},
            "status": {"type": "null", "description": "Not decided yet: GET it later."},
        },
    },
    "RemediationPage": {
        "type": "object",
        "required": ["items", "next"],
        "properties": {
            "items": {"type": "array", "items": {"$ref": "#/components/schemas/Remediation"}},
            "next": {"type": ["string", "null"]},
        },
    },
    "Circuit": {
        "type": "object",
        "required": ["open", "reason", "changed_at"],
        "properties": {
            "open": {"type": "boolean", "description": "While open, rules only notify."},
            "reason": {"type": ["string", "null"]},
            "changed_at": {"type": ["string", "null"], "format": "date-time"},
            "changed_by": {
                "type": ["string", "null"],
                "description": "The principal that last reset it; null: opened by the engine.",
            },
        },
    },
    "ServiceList": {
        "type": "object",
        "required": ["window", "items"],
        "properties": {
            "window": {
                "type": "object",
                "required": ["days", "since", "until"],
                "description": "Outcomes count remediations created in [since, until).",
                "properties": {
                    "days": {"const": 30},
                    "since": {"type": "string", "format": "date-time"},
                    "until": {"type": "string", "format": "date-time"},
                },
            },
            "items": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/Service"},
                "description": "Every service of the loaded catalog, by name.",
            },
        },
    },
    "Service": {
        "type": "object",
        "required": ["service", "namespace", "automation", "automation_changed", "last_30_days"],
        "properties": {
            "service": {"type": "string"},
            "namespace": {"type": "string"},
            "automation": {
                "enum": _AUTOMATION_LEVELS,
                "description": "The level this daemon acts on (its catalog): notify decides "
                "and tells, approve makes every automatic plan wait for approval, auto acts.",
            },
            "automation_changed": {
                "oneOf": [{"$ref": "#/components/schemas/AutomationChange"}, {"type": "null"}],
                "description": "The last level change the journal recorded for the service; "
                "null when none was recorded yet.",
            },
            "last_30_days": {"$ref": "#/components/schemas/ServiceOutcomes"},
        },
    },
    "AutomationChange": {
        "type": "object",
        "required": ["at", "by", "from", "to"],
        "properties": {
            "at": {"type": "string", "format": "date-time"},
            "by": {
                "type": "string",
                "description": "What made the change, as far as the daemon can know: the rule "
                "files it loaded and their digest, e.g. `rules /etc/remediator/rules "
                "(sha256:0123456789ab)`.",
            },
            "from": {
                "enum": [*_AUTOMATION_LEVELS, None],
                "description": "The level before; null: the first level recorded.",
            },
            "to": {"enum": _AUTOMATION_LEVELS},
        },
    },
    "ServiceOutcomes": {
        "type": "object",
        "required": [
            "plans",
            "succeeded",
            "failed",
            "needs_human",
            "would_have_run",
            "median_seconds_to_recover",
        ],
        "properties": {
            "plans": {
                "type": "integer",
                "minimum": 0,
                "description": "Plans meant to change something (not skipped, not dry "
                "runs, not notify_only), automatic or requested, whatever became of them.",
            },
            "succeeded": {"type": "integer", "minimum": 0},
            "failed": {"type": "integer", "minimum": 0},
            "needs_human": {"type": "integer", "minimum": 0},
            "would_have_run": {
                "type": "integer",
                "minimum": 0,
                "description": "Plans the notify level kept to a notification.",
            },
            "median_seconds_to_recover": {
                "type": ["number", "null"],
                "minimum": 0,
                "description": "Median of plan created -> finished succeeded; null without "
                "a success.",
            },
        },
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {
            "status": {"enum": ["ok", "unavailable"]},
            "checks": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    },
}


def openapi_document(*, metrics_need_read: bool = False) -> dict[str, Any]:
    document = _document()
    if metrics_need_read:
        document["paths"]["/metrics"]["get"].update(
            {"security": _SECURED, "x-required-role": "read"}
        )
    for operations in document["paths"].values():
        for operation in operations.values():
            role = operation.get("x-required-role")
            if role is not None:
                operation["responses"] = _guarded(role, operation["responses"])
            # Any operation may meet a bug: the middleware answers it the same way everywhere.
            operation["responses"]["500"] = _INTERNAL
    return document


def _document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "remediator",
            "version": remediator.__version__,
            "description": "Alert-to-remediation daemon: webhook intake and read API. Every "
            "route under /api/v1 except this document asks for a role (x-required-role): "
            "ingest, read or operate; admin holds them all (docs/security.md).",
        },
        "components": {
            "schemas": {**model_schemas(), **_SCHEMAS},
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A principal's token (auth.principals_file) or the "
                    "webhook token (ingest only).",
                },
                "basic": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "The webhook's username and password (ingest only).",
                },
                "mutualTLS": {
                    "type": "mutualTLS",
                    "description": "A client certificate whose subject names a principal "
                    "(http.tls_client_ca_file).",
                },
            },
        },
        "paths": {
            "/api/v1/webhooks/alertmanager": {
                "post": {
                    "summary": "Receive an Alertmanager webhook notification.",
                    "description": (
                        "Answers 200 only once every alert is durably journaled. Replays are "
                        "idempotent: an alert's key is receiver + fingerprint + startsAt + status."
                    ),
                    "security": _WEBHOOK_SECURED,
                    "x-required-role": "ingest",
                    "requestBody": {
                        "required": True,
                        **_json({"$ref": "#/components/schemas/AlertmanagerPayload"}),
                    },
                    "responses": {
                        "200": {
                            "description": "Every alert is journaled (or was already).",
                            **_json({"$ref": "#/components/schemas/WebhookAccepted"}),
                        },
                        "400": _error(
                            "Can never be valid (e.g. a time outside the accepted range, a "
                            "label past limits.label_value_bytes); the message names the "
                            "field. Nothing of the payload is journaled."
                        ),
                        "413": _error(
                            "The body is larger than http.body_limit_bytes, or holds more "
                            "alerts than limits.alerts_per_request. Nothing is journaled."
                        ),
                        "503": _error(
                            "Journal unavailable or draining: retry later.", _RETRY_AFTER
                        ),
                    },
                }
            },
            "/api/v1/signals": {
                "get": {
                    "summary": "List journaled signals, newest first.",
                    "security": _SECURED,
                    "x-required-role": "read",
                    "parameters": [_SERVICE, _LIMIT, _CURSOR],
                    "responses": {
                        "200": {
                            "description": "One page of signals.",
                            **_json({"$ref": "#/components/schemas/SignalPage"}),
                        },
                        "400": _error("A query parameter is invalid; the message names it."),
                        "503": _error("Journal unavailable.", _RETRY_AFTER),
                    },
                }
            },
            "/api/v1/remediations": {
                "get": {
                    "summary": "List remediations (plans, dry-runs, skips), newest first.",
                    "security": _SECURED,
                    "x-required-role": "read",
                    "parameters": [
                        _SERVICE,
                        {
                            "name": "status",
                            "in": "query",
                            "description": "Only remediations in this status.",
                            "schema": {"enum": _REMEDIATION_STATUSES},
                        },
                        _LIMIT,
                        _CURSOR,
                    ],
                    "responses": {
                        "200": {
                            "description": "One page of remediations.",
                            **_json({"$ref": "#/components/schemas/RemediationPage"}),
                        },
                        "400": _error("A query parameter is invalid; the message names it."),
                        "503": _error("Journal unavailable.", _RETRY_AFTER),
                    },
                }
            },
            "/api/v1/remediations/{id}": {
                "get": {
                    "summary": "One remediation with its full decision.",
                    "security": _SECURED,
                    "x-required-role": "read",
                    "parameters": [
                        {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                    "responses": {
                        "200": {
                            "description": "The remediation.",
                            **_json({"$ref": "#/components/schemas/Remediation"}),
                        },
                        "404": _error("No remediation with that id."),
                        "503": _error("Journal unavailable.", _RETRY_AFTER),
                    },
                }
            },
            "/api/v1/remediations/{id}/record": {
                "get": {
                    "summary": "The rollback record: basic facts, timeline, results, impact, "
                    "and root cause / improvements / lessons to fill in.",
                    "security": _SECURED,
                    "x-required-role": "read",
                    "parameters": [
                        {
                            "name": "id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "format",
                            "in": "query",
                            "schema": {"enum": ["md", "html", "json"], "default": "md"},
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "The record in the asked format.",
                            "content": {
                                "text/markdown": {"schema": {"type": "string"}},
                                "text/html": {"schema": {"type": "string"}},
                                "application/json": {"schema": {"type": "object"}},
                            },
                        },
                        "400": _error("format is not md, html or json."),
                        "404": _error("No remediation with that id."),
                        "503": _error("Journal unavailable.", _RETRY_AFTER),
                    },
                },
                "patch": {
                    "summary": "Write the record's root cause, improvements and lessons.",
                    "description": (
                        "Only these three fields; a field left out keeps its value. The "
                        "editor is the principal of the credential, never a field; every "
                        "edit is journaled with its editor and time."
                    ),
                    "security": _SECURED,
                    "x-required-role": "operate",
                    "parameters": [
                        {
                            "name": "id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                    ],
                    "requestBody": {
                        "required": True,
                        **_json({"$ref": "#/components/schemas/RecordAnalysisEdit"}),
                    },
                    "responses": {
                        "200": {
                            "description": "The analysis as now recorded, with its editor.",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        "400": _error("A field is unknown, mistyped or too long (named)."),
                        "404": _error("No remediation with that id."),
                        "503": _error("Journal unavailable.", _RETRY_AFTER),
                    },
                },
            },
            "/api/v1/rollback-requests": {
                "post": {
                    "summary": "Ask for a rollback (plan 3.1.2): it waits for its approvers.",
                    "description": (
                        "The requester is the principal of the credential. The request is "
                        "journaled as a manual signal and decided by the rules (the "
                        "manual-* rule of the scenario): the answer is the remediation it "
                        "opened, normally awaiting_approval. An Idempotency-Key makes a "
                        "retried request the same request. One request per service waits "
                        "at a time."
                    ),
                    "security": _SECURED,
                    "x-required-role": "operate",
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,200}$"},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        **_json({"$ref": "#/components/schemas/RollbackRequest"}),
                    },
                    "responses": {
                        "200": {
                            "description": "A retry (same Idempotency-Key): what the first "
                            "request became.",
                            **_json({"$ref": "#/components/schemas/Remediation"}),
                        },
                        "201": {
                            "description": "Decided: the remediation it opened (status "
                            "awaiting_approval, or skipped with the reason).",
                            **_json({"$ref": "#/components/schemas/Remediation"}),
                        },
                        "202": {
                            "description": "Journaled, not decided yet.",
                            **_json({"$ref": "#/components/schemas/RequestAccepted"}),
                        },
                        "400": _error(
                            "A field is missing, malformed or unknown: a service not in the "
                            "catalog, a scenario no rule handles, a target trusted history "
                            "does not record; the message names the field. Nothing is "
                            "journaled."
                        ),
                        "409": _error("A request for the service already waits for approval."),
                        "413": _error("The body is larger than http.body_limit_bytes."),
                        "503": _error(
                            "Journal unavailable, or draining: retry later (another replica).",
                            _RETRY_AFTER,
                        ),
                    },
                }
            },
            "/api/v1/remediations/{id}/approve": _answer(
                "Approve a plan waiting for approval, as one of its approver roles.",
                "The approver is the principal of the credential, never a field of the body. "
                "Each approver role the plan names is a seat filled by a distinct principal "
                "holding it; the requester never counts (four eyes), a principal counts once. "
                "Once every seat is filled the plan runs. Past the request's expiry the plan "
                "ends expired instead.",
                "Recorded: the remediation (still awaiting_approval while seats are empty, "
                "planned once all are filled).",
                "The principal lacks the operate role, or holds none of the plan's approver "
                "roles (the message names them).",
                "Not awaiting approval, the requester's own request, already answered by this "
                "principal, or expired (it then ends expired).",
            ),
            "/api/v1/remediations/{id}/reject": _answer(
                "Reject a plan waiting for approval: it ends rejected and never runs.",
                "As approve: a principal holding one of the plan's approver roles, not the "
                "requester (who cancels instead).",
                "Rejected: the remediation.",
                "The principal lacks the operate role, or holds none of the plan's approver roles.",
                "Not awaiting approval, the requester's own request, already answered, or expired.",
            ),
            "/api/v1/remediations/{id}/cancel": _answer(
                "Withdraw a plan waiting for approval, or planned and not started.",
                "The requester may, and an admin. It ends cancelled and never runs.",
                "Cancelled: the remediation.",
                "Neither the requester nor an admin.",
                "Running, finished, or otherwise past cancelling.",
            ),
            "/api/v1/remediations/{id}/review": _answer(
                "Close the review an approved emergency request owes.",
                "By a principal that neither requested nor approved it; the record shows "
                "who closed it and when.",
                "Closed: the remediation.",
                "The principal lacks the operate role.",
                "Not an emergency, never approved, closed already, or the principal took part.",
            ),
            "/api/v1/circuit": {
                "get": {
                    "summary": "The global circuit breaker.",
                    "security": _SECURED,
                    "x-required-role": "read",
                    "responses": {
                        "200": {"description": "State.", **_json(_CIRCUIT)},
                        "503": _error("Journal unavailable.", _RETRY_AFTER),
                    },
                }
            },
            "/api/v1/circuit/reset": {
                "post": {
                    "summary": "Close the circuit breaker; earlier actions stop counting.",
                    "security": _SECURED,
                    "x-required-role": "operate",
                    "responses": {
                        "200": {"description": "State after the reset.", **_json(_CIRCUIT)},
                        "503": _error("Journal unavailable.", _RETRY_AFTER),
                    },
                }
            },
            "/api/v1/slack/interactions": {
                "post": {
                    "summary": "Slack's Request URL for the Approve and Reject buttons (404 "
                    "unless slack.signing_secret is set). Authenticated by Slack's request "
                    "signature (v0, 5-minute window, each signature once), not by a token; "
                    "the clicking Slack user acts as the principal whose slack_users lists "
                    "it, under the same rules as /approve and /reject. Refusals are told to "
                    "the clicker in a message only they see, and answered 200.",
                    "security": [],
                    "parameters": [
                        {
                            "name": "X-Slack-Request-Timestamp",
                            "in": "header",
                            "required": True,
                            "schema": {"type": "string", "pattern": "^[0-9]{1,12}$"},
                        },
                        {
                            "name": "X-Slack-Signature",
                            "in": "header",
                            "required": True,
                            "schema": {"type": "string", "pattern": "^v0=[0-9a-f]{64}$"},
                        },
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/x-www-form-urlencoded": {
                                "schema": {
                                    "type": "object",
                                    "required": ["payload"],
                                    "properties": {
                                        "payload": {
                                            "type": "string",
                                            "description": "A block_actions payload (JSON).",
                                        }
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "Taken (the click's outcome is told in Slack).",
                            **_json({"type": "object"}),
                        },
                        "400": _error("Not a block_actions payload; the field is named."),
                        "401": _error("Signature missing, malformed, stale, wrong or replayed."),
                        "403": _error("From a workspace other than slack.team_id."),
                        "404": _error("Slack interactions are off (no slack.signing_secret)."),
                        "429": _error("Too many failed authentications from the address."),
                        "503": _error("Journal unavailable.", _RETRY_AFTER),
                    },
                }
            },
            "/api/v1/services": {
                "get": {
                    "summary": "Each catalog service: its automation level, when and by what "
                    "it last changed, and its last 30 days (plans, succeeded, failed, "
                    "needs_human, median time to recover).",
                    "security": _SECURED,
                    "x-required-role": "read",
                    "responses": {
                        "200": {
                            "description": "The services, by name.",
                            **_json({"$ref": "#/components/schemas/ServiceList"}),
                        },
                        "503": _error("Journal unavailable.", _RETRY_AFTER),
                    },
                }
            },
            "/api/v1/openapi.json": {
                "get": {
                    "summary": "This document.",
                    "responses": {
                        "200": {"description": "OpenAPI 3.1 document.", **_json({"type": "object"})}
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness: the process serves HTTP and its journal can write.",
                    "responses": {
                        "200": {
                            "description": "Alive.",
                            **_json({"$ref": "#/components/schemas/Health"}),
                        },
                        "503": {
                            "description": "The journal's writer stopped: restart the process.",
                            **_json({"$ref": "#/components/schemas/Health"}),
                        },
                    },
                }
            },
            "/readyz": {
                "get": {
                    "summary": "Readiness: the journal is writable and the daemon is not draining.",
                    "responses": {
                        "200": {
                            "description": "Ready.",
                            **_json({"$ref": "#/components/schemas/Health"}),
                        },
                        "503": {
                            "description": "Not ready (journal not writable, or draining).",
                            "headers": _RETRY_AFTER,
                            **_json({"oneOf": [{"$ref": "#/components/schemas/Health"}, _ERROR]}),
                        },
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics (text exposition format).",
                    "responses": {
                        "200": {
                            "description": "Metrics.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
        },
    }
