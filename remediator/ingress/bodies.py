"""The JSON bodies the API takes, as models: the handlers validate with them, and the
OpenAPI document is generated from them (ingress/openapi.py), so the two cannot drift.

``parse`` turns pydantic's first error into ``InvalidInput`` naming the field, in the
API's own words (``reason: at most 500 characters, got 501``), never quoting the value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from remediator.domain.approvals import SCENARIOS
from remediator.domain.errors import InvalidInput
from remediator.domain.paging import shown
from remediator.domain.record import (
    MAX_ANALYSIS_ITEM_CHARS,
    MAX_ANALYSIS_ITEMS,
    MAX_ROOT_CAUSE_CHARS,
)

MAX_COMMENT_CHARS = 500
MAX_REASON_CHARS = 500
MAX_NAME_CHARS = 253
# No control characters; in texts of several lines, line breaks and tabs are fine.
ONE_LINE = r"^[^\x00-\x1f\x7f]*$"
LINES = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"

Body = TypeVar("Body", bound="ApiBody")
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _stripped(value: str) -> str:
    return value.strip()


def _not_blank(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    return value


Name = Annotated[
    str,
    Field(min_length=1, max_length=MAX_NAME_CHARS, pattern=ONE_LINE),
    AfterValidator(_stripped),
    AfterValidator(_not_blank),
]


AnalysisItem = Annotated[
    str, Field(max_length=MAX_ANALYSIS_ITEM_CHARS, pattern=LINES), AfterValidator(_stripped)
]
AnalysisItems = Annotated[list[AnalysisItem], Field(max_length=MAX_ANALYSIS_ITEMS)]
Comment = Annotated[
    str, Field(max_length=MAX_COMMENT_CHARS, pattern=LINES), AfterValidator(_stripped)
]
RootCause = Annotated[
    str, Field(max_length=MAX_ROOT_CAUSE_CHARS, pattern=LINES), AfterValidator(_stripped)
]


class ApiBody(BaseModel):
    # strict: "true" is not true, 7 is not "7"; a client's mistake is named, not guessed.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    # Said of a field the body does not take.
    unknown_field: ClassVar[str] = "unknown field"


class RollbackRequestBody(ApiBody):
    """``POST /api/v1/rollback-requests``. The requester is the credential's principal."""

    unknown_field: ClassVar[str] = (
        "unknown field (the body takes service, scenario, reason, target, emergency)"
    )

    service: Name = Field(description="A service of the catalog.")
    scenario: str = Field(
        json_schema_extra={"enum": list(SCENARIOS)},
        description="The situation of plan 3.1.2; it decides the approvers.",
    )
    reason: Annotated[
        str,
        Field(min_length=1, max_length=MAX_REASON_CHARS, pattern=LINES),
        AfterValidator(_stripped),
        AfterValidator(_not_blank),
    ] = Field(description="Why, for the approvers and the record.")
    target: Name | None = Field(
        None,
        description="A revision or version trusted deploy history records before the "
        "current one; default: the newest recorded healthy.",
    )
    emergency: bool = Field(
        False,
        description="One approver from approvals.emergency_approver_roles instead of the "
        "scenario's; a review is owed afterwards.",
    )

    @model_validator(mode="after")
    def _known_scenario(self) -> RollbackRequestBody:
        if self.scenario not in SCENARIOS:
            raise _FieldError("scenario", f"must be one of {', '.join(SCENARIOS)}, got "
                              f"{shown(self.scenario)}")  # fmt: skip
        return self


class CommentBody(ApiBody):
    """``approve``, ``reject``, ``cancel``, ``review``: who acts is never a field."""

    unknown_field: ClassVar[str] = 'unknown field (the body takes only "comment")'

    comment: Comment | None = Field(None, description="Why; recorded with the answer.")


class RecordAnalysisBody(ApiBody):
    """``PATCH .../record``: a field left out keeps its value; an empty list clears one."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    unknown_field: ClassVar[str] = (
        "unknown field (the body takes only root_cause, improvements, lessons; who edits "
        "is the principal of the credential you send)"
    )

    # Not nullable (null is refused below, and the document does not offer it): leave a
    # field out to keep it, send "" or [] to clear it. None is only a left-out field.
    root_cause: RootCause | SkipJsonSchema[None] = Field(
        None, description="What caused the incident."
    )
    improvements: AnalysisItems | SkipJsonSchema[None] = Field(
        None, description="What to change, one per item."
    )
    lessons: AnalysisItems | SkipJsonSchema[None] = Field(
        None, description="Lessons learned, one per item."
    )

    @field_validator("root_cause", "improvements", "lessons", mode="before")
    @classmethod
    def _not_null(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            wanted = "a string" if info.field_name == "root_cause" else "a list of strings"
            raise ValueError(f'expected {wanted}, got null (leave the field out to keep it, '
                             'send "" or [] to clear it)')  # fmt: skip
        return value

    @model_validator(mode="after")
    def _something(self) -> RecordAnalysisBody:
        if not self.model_fields_set:
            raise _FieldError("body", "give at least one of root_cause, improvements, lessons")
        return self

    def changes(self) -> dict[str, Any]:
        """The fields given (blank list items dropped)."""
        out: dict[str, Any] = {}
        for name in sorted(self.model_fields_set):
            value = getattr(self, name)
            if isinstance(value, list):
                value = tuple(item for item in value if item)
            out[name] = value
        return out


class _FieldError(ValueError):
    """A model-level check that names its field (pydantic would name the whole body)."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(message)
        self.where = where
        self.message = message


def parse(model: type[Body], document: Mapping[str, Any]) -> Body:
    """The body as ``model``; InvalidInput naming the first field that is wrong."""
    try:
        return model.model_validate(dict(document))
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, _FieldError):
            raise InvalidInput(cause.message, where=cause.where) from None
        where = _where(error["loc"])
        if error["type"] == "extra_forbidden":  # the client's own key: shown quoted, bounded
            where = shown(str(error["loc"][-1]))
        raise InvalidInput(_message(model, error), where=where) from None


def _where(loc: tuple[int | str, ...]) -> str:
    text = ""
    # Skip the names pydantic gives the members of a union ("function-after[...]").
    for part in (p for p in loc if isinstance(p, int) or _FIELD_NAME.fullmatch(p)):
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return shown(text) if len(text) > 64 else text or "body"


def _message(model: type[ApiBody], error: Mapping[str, Any]) -> str:
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "extra_forbidden":
        return model.unknown_field
    if kind == "missing":
        return "required"
    field = model.model_fields.get(str(error["loc"][0])) if error["loc"] else None
    if value is None and kind.endswith("_type") and field is not None and field.is_required():
        return "required"  # null for a required field: as good as left out
    if kind in ("string_type", "bool_type", "list_type"):
        wanted = {"string_type": "a string", "bool_type": "true or false",
                  "list_type": "a list of strings"}[kind]  # fmt: skip
        return f"expected {wanted}, got {_kind(value)}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_too_long":
        return f"at most {ctx['max_length']} characters, got {len(str(value))}"
    if kind == "too_long":
        return f"at most {ctx['max_length']} items, got {ctx.get('actual_length')}"
    if kind == "string_pattern_mismatch":
        lines = ctx.get("pattern") == LINES
        return "holds control characters" + (" (other than line breaks)" if lines else "")
    return str(error["msg"]).removeprefix("Value error, ")


def _kind(value: object) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "an object"}.get(type(value), "null")  # fmt: skip
