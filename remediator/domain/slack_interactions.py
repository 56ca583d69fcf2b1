"""Slack's interactive messages: the Approve and Reject buttons, the request signature
Slack puts on every click it posts back, and the click itself (pure).

Slack signs each request to an app's Request URL (signature version ``v0``): the
hex HMAC-SHA256, keyed with the app's signing secret, of ``v0:<timestamp>:<raw body>``,
sent as ``X-Slack-Signature: v0=<hex>`` beside ``X-Slack-Request-Timestamp``. A
request older (or newer) than the window is refused even when the signature matches,
so a captured request cannot be replayed later; the ingress also remembers the
signatures it saw within the window, so it cannot be replayed sooner either.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from remediator.domain.errors import InvalidInput

SIGNATURE_VERSION = "v0"
# Slack's own recommendation; also what its SDKs use.
SIGNATURE_WINDOW_SECONDS = 300
TIMESTAMP_HEADER = "X-Slack-Request-Timestamp"
SIGNATURE_HEADER = "X-Slack-Signature"
_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
# Slack ids: workspaces T…, users U… or W… (Enterprise Grid), channels C/G/D…
SLACK_USER_PATTERN = re.compile(r"[UW][A-Z0-9]{2,30}")
_SLACK_ID = re.compile(r"[A-Z][A-Z0-9]{2,30}")
_MESSAGE_TS = re.compile(r"[0-9]{1,12}\.[0-9]{1,9}")
_REMEDIATION_ID = re.compile(r"[A-Za-z0-9._:-]{1,200}")
APPROVAL_BLOCK_ID = "remediator.approval"


class SlackAction(StrEnum):
    """The ``action_id`` of each button remediator puts on a message."""

    APPROVE = "remediator.approve"
    REJECT = "remediator.reject"


class SignatureCheck(StrEnum):
    VALID = "valid"
    MISSING = "missing"  # a header is absent
    MALFORMED = "malformed"  # a header is not what Slack sends
    STALE = "stale"  # outside the window: too old, or from the future
    MISMATCH = "mismatch"  # signed with another secret, or the body was changed


def sign(*, secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Slack-Signature`` value Slack would send for this body and timestamp."""
    base = f"{SIGNATURE_VERSION}:{timestamp}:".encode() + body
    return f"{SIGNATURE_VERSION}=" + hmac.new(secret, base, hashlib.sha256).hexdigest()


def check_signature(
    *,
    secret: bytes,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    now: float,
    window: float = SIGNATURE_WINDOW_SECONDS,
) -> SignatureCheck:
    """Whether Slack signed this request (``now`` in seconds since the epoch).

    The timestamp is checked first, but the comparison of the signatures is made in
    constant time (``hmac.compare_digest``) and only after the whole digest is computed.
    """
    if not timestamp or not signature:
        return SignatureCheck.MISSING
    if _TIMESTAMP.fullmatch(timestamp) is None or _SIGNATURE.fullmatch(signature) is None:
        return SignatureCheck.MALFORMED
    if abs(now - int(timestamp)) > window:
        return SignatureCheck.STALE
    expected = sign(secret=secret, timestamp=timestamp, body=body)
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        return SignatureCheck.MISMATCH
    return SignatureCheck.VALID


class SlackClick(BaseModel):
    """One click on one of remediator's buttons, as Slack reported it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    team_id: str
    user_id: str
    user_name: str
    action: SlackAction
    remediation_id: str
    channel_id: str | None
    message_ts: str | None


def parse_click(document: Any) -> SlackClick | None:
    """The click of a ``block_actions`` payload; None when it is not one of our buttons
    (another app's action, a future button). InvalidInput names the malformed field."""
    if not isinstance(document, Mapping):
        raise InvalidInput("expected a JSON object", where="payload")
    kind = document.get("type")
    if kind != "block_actions":
        raise InvalidInput(f"only block_actions is handled, got {_shown(kind)}", where="type")
    actions = document.get("actions")
    if not isinstance(actions, list) or not actions:
        raise InvalidInput("expected a non-empty list", where="actions")
    action = actions[0]
    if not isinstance(action, Mapping):
        raise InvalidInput("expected an object", where="actions[0]")
    try:
        which = SlackAction(str(action.get("action_id")))
    except ValueError:
        return None
    return SlackClick(
        team_id=_id(document, "team", _SLACK_ID),
        user_id=_id(document, "user", SLACK_USER_PATTERN),
        user_name=_user_name(document["user"]),
        action=which,
        remediation_id=_text(action, "value", _REMEDIATION_ID, where="actions[0].value"),
        channel_id=_optional(document.get("container"), "channel_id", _SLACK_ID, "container"),
        message_ts=_optional(document.get("container"), "message_ts", _MESSAGE_TS, "container"),
    )


def _id(document: Mapping[str, Any], name: str, pattern: re.Pattern[str]) -> str:
    holder = document.get(name)
    if not isinstance(holder, Mapping):
        raise InvalidInput("expected an object with an id", where=name)
    return _text(holder, "id", pattern, where=f"{name}.id")


def _user_name(user: Mapping[str, Any]) -> str:
    name = user.get("username") or user.get("name") or ""
    return name[:100] if isinstance(name, str) and name.isprintable() else ""


def _optional(holder: Any, name: str, pattern: re.Pattern[str], where: str) -> str | None:
    if not isinstance(holder, Mapping) or holder.get(name) is None:
        return None
    return _text(holder, name, pattern, where=f"{where}.{name}")


def _text(holder: Mapping[str, Any], name: str, pattern: re.Pattern[str], *, where: str) -> str:
    value = holder.get(name)
    if not isinstance(value, str) or pattern.fullmatch(value) is None:
        raise InvalidInput(f"not a valid value ({_shown(value)})", where=where)
    return value


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
