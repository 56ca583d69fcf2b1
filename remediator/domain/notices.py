"""What Slack and email say about a remediation, and where it goes (pure).

Slack messages are Block Kit; the limits enforced here are Slack's documented ones
(50 blocks per message, 3000 characters per section text, 10 fields of at most 2000
characters per section, 150 characters of header text, 10 context elements). Text
over a limit is clipped with an ellipsis rather than rejected: a clipped
notification is better than ``invalid_blocks`` and no notification.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from remediator.domain.lifecycle import RemediationStatus
from remediator.domain.record import (
    ApprovalFacts,
    CheckStatus,
    RollbackRecord,
    basic_facts,
    format_duration,
    format_time,
    record_html_fragment,
    record_links,
    safe_url,
    status_note,
    trigger_line,
    versions_line,
)
from remediator.domain.slack_interactions import APPROVAL_BLOCK_ID, SlackAction

MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_FIELDS = 10
MAX_FIELD_TEXT = 2000
MAX_HEADER_TEXT = 150
MAX_CONTEXT_ELEMENTS = 10
# Slack truncates longer `text`; the fallback is a one-liner anyway.
MAX_FALLBACK_TEXT = 3000
# Three links must fit one section (3000) with their separators.
_MAX_LINK = 990

_STATUS_EMOJI = {
    RemediationStatus.PLANNED: ":clipboard:",
    RemediationStatus.AWAITING_APPROVAL: ":raised_hand:",
    RemediationStatus.DRY_RUN: ":test_tube:",
    RemediationStatus.SKIPPED: ":fast_forward:",
    RemediationStatus.RUNNING: ":arrows_counterclockwise:",
    RemediationStatus.SUCCEEDED: ":white_check_mark:",
    RemediationStatus.FAILED: ":x:",
    RemediationStatus.NEEDS_HUMAN: ":rotating_light:",
    RemediationStatus.REJECTED: ":no_entry_sign:",
    RemediationStatus.CANCELLED: ":heavy_multiplication_x:",
    RemediationStatus.EXPIRED: ":hourglass:",
}
_CHECK_EMOJI = {
    CheckStatus.PASSED: ":large_green_circle:",
    CheckStatus.FAILED: ":red_circle:",
    CheckStatus.SKIPPED: ":white_circle:",
    CheckStatus.NOT_RUN: ":white_circle:",
}


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_escape(text: str) -> str:
    """Slack's mrkdwn needs exactly these three escaped (and nothing else).

    This is also what keeps an annotation from pinging ``<!channel>`` or a user.
    """
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _mrkdwn(text: str, limit: int) -> str:
    """Escaped and clipped to ``limit`` without cutting an ``&amp;``-style entity."""
    escaped = slack_escape(text)
    if len(escaped) <= limit:
        return escaped
    cut = escaped[: limit - 1]
    amp = cut.rfind("&", len(cut) - 5)
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + "…"


def _slack_link(url: str, label: str) -> str:
    # "|" and ">" would end the <url|label> syntax early.
    url = slack_escape(url).replace("|", "%7C")
    return f"<{url}|{slack_escape(label).replace('|', '/')}>"


def _headline(record: RollbackRecord) -> str:
    action = record.action or "remediation"
    return " ".join(f"{record.service}: {action} {record.status.label}".split())


def slack_text(record: RollbackRecord) -> str:
    """The notification fallback ``text`` (also what mobile push notifications show)."""
    line = f"{_headline(record)} ({versions_line(record)}) - {record.trigger.kind}"
    return _mrkdwn(" ".join(line.split()), MAX_FALLBACK_TEXT)


def slack_blocks(
    record: RollbackRecord, *, record_url: str | None, buttons: bool = False
) -> list[dict[str, Any]]:
    """The remediation's message. With ``buttons`` (Slack interactivity is configured) a
    plan waiting for approval carries Approve and Reject buttons."""
    emoji = _STATUS_EMOJI[record.status]
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": clip(f"{emoji} {_headline(record)}", MAX_HEADER_TEXT),
                "emoji": True,
            },
        }
    ]
    fields = [
        ("Service", record.target),
        ("Trigger", trigger_line(record.trigger)),
        ("Action", record.action or "-"),
        ("Versions", versions_line(record)),
        ("Status", record.status.value),
        ("Type", record.mode),
        ("Rule", record.rule or "-"),
        ("Duration", format_duration(record.duration)),
    ]
    blocks.append(
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*{k}*\n{_mrkdwn(v, MAX_FIELD_TEXT - len(k) - 3)}"}
                for k, v in fields[:MAX_FIELDS]
            ],
        }
    )
    why = [
        x
        for x in (status_note(record), record.reason, record.explanation, record.trigger.summary)
        if x
    ]
    if why:
        text = "\n".join(dict.fromkeys(why))  # reason and explanation are often equal
        blocks.append(_section(_mrkdwn(text, MAX_SECTION_TEXT)))
    if record.approval is not None:
        blocks.append(_section(_approval_text(record.approval)))
        if buttons and record.status is RemediationStatus.AWAITING_APPROVAL:
            blocks.append(approval_buttons(record))
    blocks.append({"type": "divider"})
    blocks.append(_section(_timeline_text(record, record_url=record_url)))
    blocks.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": clip(f"{_CHECK_EMOJI[c.status]} {name}: {c.status.label}", 2000),
                }
                for name, c in record.results.items()
            ][:MAX_CONTEXT_ELEMENTS],
        }
    )
    links = record_links(record, record_url=record_url)
    if links:
        # Links in mrkdwn, not url buttons: a button click also posts an interaction
        # payload, which an app without a request URL answers with an error icon.
        # A link clipped in half is broken markup: drop overlong ones (the record has them).
        rendered = [_slack_link(url, label) for label, url in links]
        rendered = [link for link in rendered if len(link) <= _MAX_LINK]
        if rendered:
            blocks.append(_section("  •  ".join(rendered)))
    blocks.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": _mrkdwn(
                        f"remediation {record.remediation_id} · signal "
                        f"{record.trigger.signal_id or '-'}",
                        2000,
                    ),
                }
            ],
        }
    )
    return blocks[:MAX_BLOCKS]


def _approval_text(facts: ApprovalFacts) -> str:
    """Who asked, each answer with role and time, and the seats still empty."""
    asked = (
        f"requested by *{_mrkdwn(facts.requester, 200)}*" if facts.requester else "an alert's plan"
    )
    lines = [
        f"*Approval* ({asked}; needs {_mrkdwn(' + '.join(facts.required), 300)}"
        f"{', emergency' if facts.emergency else ''})"
    ]
    for answer in facts.answers:
        icon, did = (
            (":white_check_mark:", "approved")
            if answer.verdict == "approve"
            else (":no_entry_sign:", "rejected")
        )
        role = f" as {', '.join(answer.roles)}" if answer.roles else ""
        line = f"{icon} *{answer.principal}*{role} {did} at {format_time(answer.at)}"
        if answer.comment:
            line += f": {answer.comment}"
        lines.append(_mrkdwn(" ".join(line.split()), 400))
    if facts.missing:
        lines.append(
            f":hourglass_flowing_sand: waiting for {_mrkdwn(', '.join(facts.missing), 300)}"
        )
    return clip("\n".join(lines), MAX_SECTION_TEXT)


def approval_buttons(record: RollbackRecord) -> dict[str, Any]:
    """Approve and Reject, each behind Slack's confirmation dialog: one stray tap must not
    start or stop a production rollback. The button's value is the remediation id only;
    who clicked is what Slack signs, never anything in the message."""
    what = clip(f"{record.action or 'remediation'} of {record.target}", 120)
    return {
        "type": "actions",
        "block_id": APPROVAL_BLOCK_ID,
        "elements": [
            _button(SlackAction.APPROVE, "Approve", "primary", record.remediation_id,
                    title="Approve this rollback?",
                    text=f"Approve the {what} ({versions_line(record)})? It runs once every "
                    "approver has approved."),
            _button(SlackAction.REJECT, "Reject", "danger", record.remediation_id,
                    title="Reject this rollback?",
                    text=f"Reject the {what}? It ends rejected and never runs."),
        ],
    }  # fmt: skip


def _button(
    action: SlackAction, label: str, style: str, value: str, *, title: str, text: str
) -> dict[str, Any]:
    return {
        "type": "button",
        "action_id": action.value,
        "text": {"type": "plain_text", "text": label},
        "style": style,
        "value": value,
        "confirm": {
            "title": {"type": "plain_text", "text": clip(title, 100)},
            "text": {"type": "plain_text", "text": clip(" ".join(text.split()), 300)},
            "confirm": {"type": "plain_text", "text": label},
            "deny": {"type": "plain_text", "text": "Cancel"},
            "style": style,
        },
    }


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": clip(text, MAX_SECTION_TEXT)}}


def _timeline_text(record: RollbackRecord, *, record_url: str | None) -> str:
    """The latest steps that fit one section; older ones are summarised as a count."""
    title = "*Timeline*"
    if not record.timeline:
        return f"{title}\n_No steps recorded yet._"
    lines = []
    for entry in record.timeline:
        line = f"`{entry.at.astimezone(UTC).strftime('%H:%M:%S')}` {entry.step}: *{entry.status}*"
        if entry.detail:
            line += f" - {entry.detail}"
        # Capped so that one huge detail cannot crowd out the other steps.
        lines.append(_mrkdwn(" ".join(line.split()), 300))
    more = " (full timeline in the record)" if record_url else ""
    budget = MAX_SECTION_TEXT - len(title) - 80
    kept: list[str] = []
    used = 0
    for line in reversed(lines):
        if used + len(line) + 1 > budget:
            break
        kept.append(line)
        used += len(line) + 1
    kept.reverse()
    omitted = len(lines) - len(kept)
    head = [title]
    if omitted:
        head.append(f"_… {omitted} earlier step{'s' if omitted != 1 else ''} omitted{more}_")
    return "\n".join(head + kept)


# -- escalation ----------------------------------------------------------------------


def escalation_lines(record: RollbackRecord, waiting_for: list[dict[str, Any]]) -> list[str]:
    """What the escalation says: the request, how long it waited, and who has not
    answered (each empty seat, and the principals who could fill it)."""
    facts = record.approval
    lines = [f"Escalated: {_headline(record)} has waited past its response time."]
    if facts is not None:
        asked = f"requested by {facts.requester}" if facts.requester else "an alert's plan"
        lines.append(
            f"{record.remediation_id} ({asked}) needs {' + '.join(facts.required)}; "
            f"the response time of {format_duration(facts.response_time)} ended "
            f"{format_time(facts.response_due_at)}; it expires {format_time(facts.expires_at)}."
        )
    for entry in waiting_for:
        names = ", ".join(str(name) for name in entry.get("principals") or ()) or "no one listed"
        lines.append(f"Not answered: {entry.get('seat', '?')} ({names})")
    if record.trigger.summary:
        lines.append(f"Why: {record.trigger.summary}")
    return lines


def escalation_text(record: RollbackRecord, waiting_for: list[dict[str, Any]]) -> str:
    return _mrkdwn(" ".join(escalation_lines(record, waiting_for)[:1]), MAX_FALLBACK_TEXT)


def escalation_blocks(
    record: RollbackRecord,
    waiting_for: list[dict[str, Any]],
    *,
    record_url: str | None,
    buttons: bool = False,
) -> list[dict[str, Any]]:
    """A second message, on its own, so the escalation channel sees it (not an update);
    with ``buttons`` the people it reaches can answer from it too."""
    lines = escalation_lines(record, waiting_for)
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": clip(f":alarm_clock: {_headline(record)}: no answer", MAX_HEADER_TEXT),
                "emoji": True,
            },
        },
        _section(_mrkdwn("\n".join(lines), MAX_SECTION_TEXT)),
    ]
    if record_url and safe_url(record_url):
        blocks.append(_section(_slack_link(record_url, "Rollback record")))
    if buttons and record.status is RemediationStatus.AWAITING_APPROVAL:
        blocks.append(approval_buttons(record))
    return blocks


def escalation_subject(record: RollbackRecord) -> str:
    return clip(" ".join(f"[remediator] no answer in time: {_headline(record)}".split()), 200)


# -- email ---------------------------------------------------------------------------


def email_message_id(*, dedup_key: str, domain: str) -> str:
    """A Message-ID that is the same on every redelivery of one notice.

    The outbox delivers at least once; mail clients drop a second copy with the
    same Message-ID.
    """
    local = re.sub(r"[^A-Za-z0-9._-]", ".", dedup_key)
    return f"<{local}@{domain}>"


def email_subject(record: RollbackRecord) -> str:
    subject = f"[remediator] {_headline(record)} ({versions_line(record)})"
    # Header values may not carry line breaks (and must not: header injection).
    return clip(" ".join(subject.split()), 200)


def email_text(record: RollbackRecord, *, record_url: str | None = None) -> str:
    out = [_headline(record), ""]
    note = status_note(record)
    if note:
        out += [note, ""]
    width = max(len(label) for label, _ in basic_facts(record))
    out += [f"{label + ':':<{width + 1}} {value}" for label, value in basic_facts(record)]
    out.append(f"{'Duration:':<{width + 1}} {format_duration(record.duration)}")
    if record.explanation:
        out += ["", "Why:", record.explanation.strip()]
    if record.trigger.summary:
        out += ["", "Alert:", record.trigger.summary.strip()]
    out += ["", "Timeline:"]
    if record.timeline:
        for entry in record.timeline:
            line = f"  {format_time(entry.at)}  {entry.step}: {entry.status}"
            out.append(f"{line} - {entry.detail}" if entry.detail else line)
    else:
        out.append("  no steps recorded")
    out += ["", "Results:"]
    out += [
        f"  {name}: {c.status.label}" + (f" - {c.detail}" if c.detail else "")
        for name, c in record.results.items()
    ]
    links = record_links(record, record_url=record_url)
    if links:
        out += ["", "Links:"]
        out += [f"  {label}: {url}" for label, url in links]
    return "\n".join(out) + "\n"


def email_html(record: RollbackRecord, *, record_url: str | None = None) -> str:
    """HTML part: the record itself (escaped by the record renderer) in a minimal page."""
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head>\n'
        '<body style="font-family:Helvetica,Arial,sans-serif;line-height:1.45">\n'
        f"{record_html_fragment(record, record_url=record_url)}"
        "</body></html>\n"
    )


# -- routing -------------------------------------------------------------------------


class _Routing(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @field_validator("by_severity", mode="after", check_fields=False)
    @classmethod
    def _lower_severity(cls, value: Mapping[str, Any]) -> dict[str, Any]:
        # Alertmanager labels are free text: "Critical" and "critical" mean the same.
        return {key.lower(): item for key, item in value.items()}


class SlackRouting(_Routing):
    """Channel for a remediation: the service's own, else the severity's, else default."""

    default: str = Field(min_length=1)
    by_service: dict[str, str] = {}
    by_severity: dict[str, str] = {}


class EmailRouting(_Routing):
    """Recipients, with the same precedence as ``SlackRouting``; empty means no mail."""

    default: tuple[str, ...] = ()
    by_service: dict[str, tuple[str, ...]] = {}
    by_severity: dict[str, tuple[str, ...]] = {}

    @field_validator("default")
    @classmethod
    def _addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        _check_addresses(value)
        return value

    @field_validator("by_service", "by_severity")
    @classmethod
    def _address_map(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for addresses in value.values():
            _check_addresses(addresses)
        return value


def _check_addresses(addresses: tuple[str, ...]) -> None:
    for address in addresses:
        if "@" not in address or any(c.isspace() or c in ",;<>" for c in address):
            raise ValueError(f"not an email address: {address!r}")


def route_slack_channel(*, service: str, severity: str | None, routes: SlackRouting) -> str:
    if service in routes.by_service:
        return routes.by_service[service]
    if severity and severity.lower() in routes.by_severity:
        return routes.by_severity[severity.lower()]
    return routes.default


def route_email_recipients(
    *, service: str, severity: str | None, routes: EmailRouting
) -> list[str]:
    if service in routes.by_service:
        return list(routes.by_service[service])
    if severity and severity.lower() in routes.by_severity:
        return list(routes.by_severity[severity.lower()])
    return list(routes.default)


class SlackMessageRef(BaseModel):
    """Where a remediation's Slack message lives, kept so later stages update it.

    ``channel`` is the channel id Slack answered with (``chat.update`` needs the id,
    not the ``#name`` the message was posted to).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    channel: str = Field(min_length=1)
    ts: str = Field(min_length=1)

    def to_dict(self) -> dict[str, str]:
        return {"channel": self.channel, "ts": self.ts}
