"""The rollback record (plan §3.11) and what notifications say about a remediation.

A ``RollbackRecord`` is a frozen snapshot the journal assembles for one remediation;
the renderers here turn it into Markdown, self-contained HTML or JSON. Everything a
signal carried (annotations, labels) is attacker-influenced text: the HTML renderer
escapes every value and only ever links http(s) URLs.

``Notice`` is one notification-worthy stage of a remediation. Its ``dedup_key``
(``"<remediation id>:<stage>"``) is what the outbox stores once and delivers at
least once, so a replay never produces a second mail or Slack update for a stage.
"""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from remediator.domain.lifecycle import RemediationStatus
from remediator.domain.plans import NoActionReason

PLACEHOLDER = "to be filled in"
_FORMAT_VERSION = 1


class CheckStatus(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"
    NOT_RUN = "not_run"

    @property
    def label(self) -> str:
        return self.value.replace("_", " ")


class Stage(StrEnum):
    """Points in a remediation's life people are told about."""

    PLANNED = "planned"
    VOTED = "voted"  # one approver answered; other seats are still empty
    APPROVED = "approved"  # every seat of a plan waiting for approval is filled
    ESCALATED = "escalated"  # nobody answered within the response time: a second notice
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    NEEDS_HUMAN = "needs_human"
    SKIPPED = "skipped"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form; ``model_validate`` reads it back (journal, outbox)."""
        return self.model_dump(mode="json")


class Trigger(_Frozen):
    """What started the remediation: an alert, a deployment event, or a person."""

    kind: str  # alert name or event type
    source: str = ""  # alertmanager | kafka | manual
    signal_id: str = ""
    severity: str | None = None
    summary: str = ""  # the alert's summary/description annotation, if any
    generator_url: str | None = None
    runbook_url: str | None = None


class TimelineEntry(_Frozen):
    at: AwareDatetime
    step: str
    status: str
    detail: str = ""


class CheckResult(_Frozen):
    status: CheckStatus = CheckStatus.NOT_RUN
    detail: str = ""


class CheckResults(_Frozen):
    application: CheckResult = CheckResult()
    database: CheckResult = CheckResult()
    health: CheckResult = CheckResult()
    function: CheckResult = CheckResult()
    performance: CheckResult = CheckResult()

    def items(self) -> list[tuple[str, CheckResult]]:
        return [
            ("Application", self.application),
            ("Database", self.database),
            ("Health", self.health),
            ("Function", self.function),
            ("Performance", self.performance),
        ]


class ApprovalEntry(_Frozen):
    """One answer to a plan waiting for approval: who, as which role, when, what."""

    principal: str
    verdict: str  # approve | reject
    roles: tuple[str, ...] = ()
    at: AwareDatetime
    comment: str | None = None


class ApprovalFacts(_Frozen):
    """What the record says about a plan that needed approval."""

    requester: str | None = None  # None: an alert's plan
    required: tuple[str, ...] = ()  # the seats, e.g. ("product-manager", "tech-lead")
    answers: tuple[ApprovalEntry, ...] = ()
    missing: tuple[str, ...] = ()  # seats still empty while it waits
    response_time: timedelta
    response_due_at: AwareDatetime
    response: str = "pending"  # met | missed | pending
    escalated_at: AwareDatetime | None = None
    expires_at: AwareDatetime
    emergency: bool = False
    review: str = "none"  # none | owed | closed
    review_closed_by: str | None = None
    review_closed_at: AwareDatetime | None = None


class Impact(_Frozen):
    """Duration is not stored: it is computed from the record's start and finish."""

    scope: str = ""
    users: str = ""
    data: str = ""
    pods_affected: tuple[str, ...] = ()
    # From PromQL when Prometheus is configured; otherwise says why it is unknown.
    failed_requests: str = "unknown"


class EvidenceEvent(_Frozen):
    """One Kubernetes event of the workload during the remediation."""

    at: AwareDatetime
    kind: str
    name: str
    type: str = ""
    reason: str = ""
    message: str = ""
    count: int = 1


class Evidence(_Frozen):
    """What the cluster said while remediator acted; ``note`` says what is missing and why."""

    events: tuple[EvidenceEvent, ...] = ()
    helm_history: tuple[str, ...] = ()  # one line per helm revision, oldest first
    note: str = ""


# Where a failed step's detail keeps the evidence the executor gathered on the way to
# the plan's end (the plan's own record_evidence step never ran).
FAILED_STEP_EVIDENCE = "evidence"


class Analysis(_Frozen):
    """The part people write the morning after; who wrote it last, and when."""

    root_cause: str = ""
    improvements: tuple[str, ...] = ()
    lessons: tuple[str, ...] = ()
    edited_by: str | None = None
    edited_at: AwareDatetime | None = None


class RollbackRecord(_Frozen):
    # Revisions arrive as numbers from Kubernetes and Helm; they are labels here.
    model_config = ConfigDict(frozen=True, extra="forbid", coerce_numbers_to_str=True)

    remediation_id: str = Field(min_length=1)
    service: str = Field(min_length=1)
    namespace: str | None = None
    status: RemediationStatus
    automatic: bool
    trigger: Trigger
    reason: str = ""
    explanation: str = ""
    rule: str | None = None
    action: str | None = None
    version_from: str | None = None
    version_to: str | None = None
    revision_from: str | None = None
    revision_to: str | None = None
    image_from: str | None = None
    image_to: str | None = None
    owner: str | None = None
    approvers: tuple[str, ...] = ()  # the roles the plan asked for
    approved_by: tuple[str, ...] = ()  # who approved, with the role they answered as
    approval: ApprovalFacts | None = None
    created_at: AwareDatetime
    started_at: AwareDatetime | None = None
    finished_at: AwareDatetime | None = None
    timeline: tuple[TimelineEntry, ...] = ()
    results: CheckResults = CheckResults()
    impact: Impact = Impact()
    evidence: Evidence = Evidence()
    root_cause: str = ""
    improvements: tuple[str, ...] = ()
    lessons: tuple[str, ...] = ()
    analysis_edited_by: str | None = None
    analysis_edited_at: AwareDatetime | None = None

    @field_validator("timeline")
    @classmethod
    def _in_time_order(cls, value: tuple[TimelineEntry, ...]) -> tuple[TimelineEntry, ...]:
        # Stable sort: steps journaled in the same instant keep their written order.
        return tuple(sorted(value, key=lambda entry: entry.at))

    @property
    def duration(self) -> timedelta | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return max(self.finished_at - self.started_at, timedelta(0))

    @property
    def mode(self) -> str:
        return "automatic" if self.automatic else "manual"

    @property
    def target(self) -> str:
        return f"{self.namespace}/{self.service}" if self.namespace else self.service


class Notice(_Frozen):
    """One stage of one remediation to notify about (the outbox's unit of work)."""

    remediation_id: str = Field(min_length=1)
    stage: Stage
    service: str
    severity: str | None = None

    @property
    def dedup_key(self) -> str:
        return dedup_key(remediation_id=self.remediation_id, stage=self.stage)


def dedup_key(*, remediation_id: str, stage: Stage) -> str:
    return f"{remediation_id}:{stage.value}"


_STAGE_OF_STATUS = {
    RemediationStatus.PLANNED: Stage.PLANNED,
    RemediationStatus.AWAITING_APPROVAL: Stage.PLANNED,
    RemediationStatus.RUNNING: Stage.STARTED,
    RemediationStatus.SUCCEEDED: Stage.SUCCEEDED,
    RemediationStatus.FAILED: Stage.FAILED,
    RemediationStatus.NEEDS_HUMAN: Stage.NEEDS_HUMAN,
    RemediationStatus.SKIPPED: Stage.SKIPPED,
    # A dry run changes nothing; for people it ends like a skip (the record says why).
    RemediationStatus.DRY_RUN: Stage.SKIPPED,
    # Ended by people, or by nobody in time, before anything ran.
    RemediationStatus.REJECTED: Stage.SKIPPED,
    RemediationStatus.CANCELLED: Stage.SKIPPED,
    RemediationStatus.EXPIRED: Stage.SKIPPED,
}


def stage_for(status: RemediationStatus) -> Stage:
    return _STAGE_OF_STATUS[status]


# -- shared formatting ----------------------------------------------------------------


def safe_url(url: str | None) -> str | None:
    """``url`` if it is an absolute http(s) URL, else None (never link javascript: etc.)."""
    if not url:
        return None
    url = url.strip()
    if any(ch in url for ch in "\r\n\t ") or any(ord(ch) < 0x20 for ch in url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return url


def format_time(value: datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_duration(value: timedelta | None) -> str:
    if value is None:
        return "-"
    seconds = int(value.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min {secs} s"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def versions_line(record: RollbackRecord) -> str:
    """``v1.1.0 → v1.0.0 (revision 42 → 41)``, with ``?`` for what is unknown."""
    parts = []
    if record.version_from or record.version_to:
        parts.append(f"{record.version_from or '?'} → {record.version_to or '?'}")
    if record.revision_from or record.revision_to:
        revisions = f"revision {record.revision_from or '?'} → {record.revision_to or '?'}"
        parts.append(f"({revisions})" if parts else revisions)
    if record.image_from or record.image_to:
        parts.append(f"[image {record.image_from or '?'} → {record.image_to or '?'}]")
    return " ".join(parts) or "-"


def trigger_line(trigger: Trigger) -> str:
    extras = [x for x in (trigger.source, trigger.severity and f"severity {trigger.severity}") if x]
    return f"{trigger.kind} ({', '.join(extras)})" if extras else trigger.kind


def status_note(record: RollbackRecord) -> str | None:
    """The one sentence a reader needs for statuses that are not plain success."""
    if record.status is RemediationStatus.DRY_RUN:
        return "Dry run: nothing was changed; the timeline shows what would have run."
    if record.status is RemediationStatus.NEEDS_HUMAN:
        return "Needs a human: remediator stopped and left the decision to people."
    if record.status is RemediationStatus.FAILED:
        return "Failed: the remediation did not complete; check the timeline."
    if record.status is RemediationStatus.SKIPPED:
        if record.reason == NoActionReason.INTERNAL_ERROR:
            return (
                "Not decided: remediator failed while deciding this signal, so nothing was "
                "done; people decide."
            )
        if record.reason == NoActionReason.NEEDS_HUMAN:
            return (
                "Needs a human: only trusted history may choose what to undo, and it does not "
                "back this signal; nothing was done, people decide."
            )
        if record.reason == NoActionReason.NOT_IN_CATALOG:
            return "Skipped: outside the catalog remediator may act on; nothing was touched."
        if record.reason == NoActionReason.AUTOMATION_NOTIFY:
            return (
                "Notify only: the service's automation level is notify, so remediator "
                "decided and tells you what it would have run; nothing was changed."
            )
        return "Skipped: no action was taken."
    if record.status is RemediationStatus.AWAITING_APPROVAL:
        waiting = ""
        if record.approval is not None and record.approval.missing:
            waiting = f" (still needed: {', '.join(record.approval.missing)})"
        return f"Awaiting approval: nothing runs until every approver has approved{waiting}."
    if record.approval is not None and record.approval.review == "owed":
        return "Emergency approval: a review is owed until someone closes it."
    return _NEVER_RAN_NOTES.get(record.status)


_NEVER_RAN_NOTES = {
    RemediationStatus.REJECTED: "Rejected: an approver said no; nothing was done.",
    RemediationStatus.CANCELLED: "Cancelled before it ran; nothing was done.",
    RemediationStatus.EXPIRED: "Expired: nobody approved it in time; nothing was done.",
}


def basic_facts(record: RollbackRecord) -> list[tuple[str, str]]:
    """Label/value pairs of the record's basic information, in display order."""
    return [
        ("Remediation", record.remediation_id),
        ("Service", record.target),
        ("Status", record.status.value),
        ("Time", _time_span(record)),
        ("Versions", versions_line(record)),
        ("Type", record.mode),
        ("Reason", record.reason or "-"),
        ("Trigger", trigger_line(record.trigger)),
        ("Signal", record.trigger.signal_id or "-"),
        ("Rule", record.rule or "-"),
        ("Action", record.action or "-"),
        ("Owner", record.owner or "-"),
        ("Approvers", ", ".join(record.approvers) or "-"),
        ("Approved by", ", ".join(record.approved_by) or "-"),
        *_approval_facts(record.approval),
    ]


def _approval_facts(facts: ApprovalFacts | None) -> list[tuple[str, str]]:
    """Requester, each answer with role and time, the response time, the review."""
    if facts is None:
        return []
    answers = "; ".join(
        f"{a.principal}{' as ' + ', '.join(a.roles) if a.roles else ''} "
        f"{'approved' if a.verdict == 'approve' else 'rejected'} at {format_time(a.at)}"
        for a in facts.answers
    )
    rows = [
        ("Requested by", facts.requester or "- (an alert's plan)"),
        (
            "Approval needed",
            " + ".join(facts.required) + (" (emergency)" if facts.emergency else ""),
        ),
        ("Answers", answers or "none yet"),
        ("Response time", _response_line(facts)),
    ]
    if facts.emergency:
        review = {"owed": "owed", "none": "not needed (it never ran)"}.get(facts.review)
        if review is None:
            review = f"closed by {facts.review_closed_by} at {format_time(facts.review_closed_at)}"
        rows.append(("Emergency review", review))
    return rows


def _response_line(facts: ApprovalFacts) -> str:
    limit = format_duration(facts.response_time)
    if facts.response == "met":
        return f"met (within {limit}, due {format_time(facts.response_due_at)})"
    if facts.response == "missed":
        escalated = f", escalated {format_time(facts.escalated_at)}" if facts.escalated_at else ""
        return f"missed (due {format_time(facts.response_due_at)}{escalated})"
    due, expires = format_time(facts.response_due_at), format_time(facts.expires_at)
    return f"pending (due {due}, expires {expires})"


def pods_line(impact: Impact) -> str:
    if not impact.pods_affected:
        return "none recorded"
    return f"{len(impact.pods_affected)} ({', '.join(impact.pods_affected)})"


def evidence_lines(evidence: Evidence) -> list[str]:
    """Kubernetes events, then helm history, one line each; a note when nothing is there."""
    lines = [
        f"{format_time(e.at)} {e.type} {e.kind}/{e.name} {e.reason}: {e.message}"
        + (f" (x{e.count})" if e.count > 1 else "")
        for e in evidence.events
    ]
    lines += [f"helm: {line}" for line in evidence.helm_history]
    if evidence.note:
        lines.append(evidence.note)
    return lines or ["none recorded"]


def record_links(record: RollbackRecord, *, record_url: str | None = None) -> list[tuple[str, str]]:
    """(label, url) pairs that are safe to link."""
    candidates = [
        ("Alert source", record.trigger.generator_url),
        ("Runbook", record.trigger.runbook_url),
        ("Rollback record", record_url),
    ]
    return [(label, url) for label, raw in candidates if (url := safe_url(raw)) is not None]


def _time_span(record: RollbackRecord) -> str:
    if record.started_at is None:
        return f"{format_time(record.created_at)} (decided)"
    if record.finished_at is None:
        waiting = {
            RemediationStatus.RUNNING: "still running",
            RemediationStatus.NEEDS_HUMAN: "waiting for people",
        }.get(record.status, "not finished")
        return f"{format_time(record.started_at)} ({waiting})"
    return f"{format_time(record.started_at)} → {format_time(record.finished_at)}"


# -- Markdown ------------------------------------------------------------------------

# Backslash-escape what would turn data into markup (CommonMark allows escaping any
# ASCII punctuation); "<" matters most: Markdown passes raw HTML through. An "_"
# between two letters or digits never starts emphasis, so ids like rem_1 stay legible.
_MD_SPECIAL = re.compile(r"[\\`*\[\]<>&#|!]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def _md(text: str) -> str:
    return _MD_SPECIAL.sub(lambda m: "\\" + m.group(0), text)


def _md_line(text: str) -> str:
    return _md(" ".join(text.split()))


def render_markdown(record: RollbackRecord, *, record_url: str | None = None) -> str:
    out = [f"# Rollback record: {_md_line(record.target)}", ""]
    note = status_note(record)
    if note:
        out += [f"> {_md_line(note)}", ""]
    out += ["## Basic information", ""]
    out += [f"- {label}: {_md_line(value)}" for label, value in basic_facts(record)]
    if record.explanation:
        out += ["", "### Explanation", "", _md_block(record.explanation)]
    if record.trigger.summary:
        out += ["", "### Alert summary", "", _md_block(record.trigger.summary)]

    out += ["", "## Timeline", ""]
    if record.timeline:
        for number, entry in enumerate(record.timeline, start=1):
            line = f"{number}. {format_time(entry.at)} - {_md_line(entry.step)}: "
            line += _md_line(entry.status)
            if entry.detail:
                line += f" - {_md_line(entry.detail)}"
            out.append(line)
    else:
        out.append("No steps recorded.")

    out += ["", "## Results", ""]
    for label, check in record.results.items():
        line = f"- {label}: {check.status.label}"
        out.append(f"{line} - {_md_line(check.detail)}" if check.detail else line)

    out += ["", "## Impact", ""]
    out += [
        f"- Duration: {format_duration(record.duration)}",
        f"- Scope: {_md_line(record.impact.scope) or _placeholder_md()}",
        f"- Users: {_md_line(record.impact.users) or _placeholder_md()}",
        f"- Data: {_md_line(record.impact.data) or _placeholder_md()}",
        f"- Pods affected: {_md_line(pods_line(record.impact))}",
        f"- Failed requests during the incident: {_md_line(record.impact.failed_requests)}",
    ]

    out += ["", "## Evidence", ""]
    out += [f"- {_md_line(line)}" for line in evidence_lines(record.evidence)]

    out += ["", "## Analysis", ""]
    if record.analysis_edited_by:
        edited = f"{record.analysis_edited_by} at {format_time(record.analysis_edited_at)}"
        out += [f"_Last edited by {_md_line(edited)}_", ""]
    out += ["### Root cause", ""]
    out.append(_md_block(record.root_cause) if record.root_cause else _placeholder_md())
    out += ["", "### Improvements", ""]
    out += _md_numbered(record.improvements)
    out += ["", "## Lessons learned", ""]
    out += _md_numbered(record.lessons)

    links = record_links(record, record_url=record_url)
    if links:
        out += ["", "## Links", ""]
        # <...> autolinks: the URL needs no escaping beyond what safe_url guarantees,
        # except ">" which would end it.
        out += [f"- {label}: <{url.replace('>', '%3E')}>" for label, url in links]
    return "\n".join(out) + "\n"


def _placeholder_md() -> str:
    return f"_{PLACEHOLDER}_"


def _md_block(text: str) -> str:
    return "\n".join(_md(line.rstrip()) for line in text.strip().splitlines())


def _md_numbered(items: tuple[str, ...]) -> list[str]:
    if not items:
        return [_placeholder_md()]
    return [f"{n}. {_md_line(item)}" for n, item in enumerate(items, start=1)]


# -- HTML ----------------------------------------------------------------------------


def _h(text: str) -> str:
    return html.escape(text, quote=True)


_CSS = (
    "body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:56em;"
    "margin:2em auto;padding:0 1em;color:#1d1d1f;line-height:1.45}"
    "h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em}"
    "table{border-collapse:collapse}td,th{text-align:left;vertical-align:top;"
    "padding:.2em .8em .2em 0}th{white-space:nowrap}"
    ".note{background:#fff4e5;border-left:4px solid #f0a030;padding:.5em 1em}"
    ".placeholder{color:#888;font-style:italic}"
    ".passed{color:#137333}.failed{color:#c5221f}.skipped,.not_run{color:#777}"
)


def render_html(record: RollbackRecord, *, record_url: str | None = None) -> str:
    """A complete, self-contained page (inline CSS, no scripts, no external assets)."""
    title = f"Rollback record: {record.target} ({record.remediation_id})"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_h(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"{record_html_fragment(record, record_url=record_url)}"
        "</body>\n</html>\n"
    )


def record_html_fragment(record: RollbackRecord, *, record_url: str | None = None) -> str:
    """The record's body, for embedding (email) or wrapping (``render_html``)."""
    out = [f"<h1>Rollback record: {_h(record.target)}</h1>"]
    note = status_note(record)
    if note:
        out.append(f'<p class="note">{_h(note)}</p>')

    out.append("<h2>Basic information</h2>\n<table>")
    for label, value in basic_facts(record):
        out.append(f"<tr><th>{_h(label)}</th><td>{_h(value)}</td></tr>")
    out.append("</table>")
    if record.explanation:
        out.append(f"<h3>Explanation</h3>\n{_html_paragraphs(record.explanation)}")
    if record.trigger.summary:
        out.append(f"<h3>Alert summary</h3>\n{_html_paragraphs(record.trigger.summary)}")

    out.append("<h2>Timeline</h2>")
    if record.timeline:
        out.append("<ol>")
        for entry in record.timeline:
            detail = f" &mdash; {_h(entry.detail)}" if entry.detail else ""
            out.append(
                f'<li><time datetime="{_h(entry.at.isoformat())}">'
                f"{_h(format_time(entry.at))}</time> {_h(entry.step)}: "
                f"<strong>{_h(entry.status)}</strong>{detail}</li>"
            )
        out.append("</ol>")
    else:
        out.append("<p>No steps recorded.</p>")

    out.append("<h2>Results</h2>\n<table>")
    for label, check in record.results.items():
        out.append(
            f"<tr><th>{_h(label)}</th>"
            f'<td class="{_h(check.status.value)}">{_h(check.status.label)}</td>'
            f"<td>{_h(check.detail)}</td></tr>"
        )
    out.append("</table>")

    out.append("<h2>Impact</h2>\n<table>")
    out.append(f"<tr><th>Duration</th><td>{_h(format_duration(record.duration))}</td></tr>")
    for label, value in (
        ("Scope", record.impact.scope),
        ("Users", record.impact.users),
        ("Data", record.impact.data),
    ):
        out.append(f"<tr><th>{label}</th><td>{_html_or_placeholder(value)}</td></tr>")
    out.append(f"<tr><th>Pods affected</th><td>{_h(pods_line(record.impact))}</td></tr>")
    out.append(
        "<tr><th>Failed requests during the incident</th>"
        f"<td>{_h(record.impact.failed_requests)}</td></tr>"
    )
    out.append("</table>")

    out.append("<h2>Evidence</h2>\n<ul>")
    out += [f"<li>{_h(line)}</li>" for line in evidence_lines(record.evidence)]
    out.append("</ul>")

    out.append("<h2>Analysis</h2>")
    if record.analysis_edited_by:
        edited = f"{record.analysis_edited_by} at {format_time(record.analysis_edited_at)}"
        out.append(f"<p><em>Last edited by {_h(edited)}</em></p>")
    out.append("<h3>Root cause</h3>")
    out.append(_html_paragraphs(record.root_cause) if record.root_cause else _html_placeholder("p"))
    out.append(f"<h3>Improvements</h3>\n{_html_list(record.improvements)}")
    out.append(f"<h2>Lessons learned</h2>\n{_html_list(record.lessons)}")

    links = record_links(record, record_url=record_url)
    if links:
        out.append("<h2>Links</h2>\n<ul>")
        out += [f'<li><a href="{_h(url)}">{_h(label)}</a></li>' for label, url in links]
        out.append("</ul>")
    return "\n".join(out) + "\n"


def _html_placeholder(tag: str) -> str:
    return f'<{tag} class="placeholder">{PLACEHOLDER}</{tag}>'


def _html_or_placeholder(value: str) -> str:
    return _h(value) if value else _html_placeholder("span")


def _html_paragraphs(text: str) -> str:
    paragraphs = [p.strip() for p in text.strip().split("\n\n") if p.strip()]
    return "\n".join(f"<p>{_h(p).replace(chr(10), '<br>')}</p>" for p in paragraphs)


def _html_list(items: tuple[str, ...]) -> str:
    if not items:
        return _html_placeholder("p")
    return "<ol>" + "".join(f"<li>{_h(item)}</li>" for item in items) + "</ol>"


# -- JSON ----------------------------------------------------------------------------


def render_json(record: RollbackRecord, *, record_url: str | None = None) -> dict[str, Any]:
    """The stored fields plus what is derived (duration, mode), for API clients.

    Empty analysis fields stay empty here (machines should not parse placeholders).
    """
    data = record.to_dict()
    duration = record.duration
    data["format_version"] = _FORMAT_VERSION
    data["mode"] = record.mode
    data["impact"]["duration_seconds"] = None if duration is None else duration.total_seconds()
    keys = {"Alert source": "alert", "Runbook": "runbook", "Rollback record": "record"}
    data["links"] = {keys[label]: url for label, url in record_links(record, record_url=record_url)}
    return data


RecordFormat = Literal["md", "html", "json"]
RECORD_FORMATS: tuple[RecordFormat, ...] = ("md", "html", "json")
CONTENT_TYPES: dict[RecordFormat, str] = {
    "md": "text/markdown; charset=utf-8",
    "html": "text/html; charset=utf-8",
    "json": "application/json",
}


def render(record: RollbackRecord, *, fmt: RecordFormat, record_url: str | None = None) -> str:
    """The record as text in ``fmt`` (for ``GET .../record`` and ``remediator report``).

    Serve it with ``CONTENT_TYPES[fmt]``.
    """
    if fmt == "md":
        return render_markdown(record, record_url=record_url)
    if fmt == "html":
        return render_html(record, record_url=record_url)
    if fmt == "json":
        data = render_json(record, record_url=record_url)
        return json.dumps(data, ensure_ascii=False, indent=2) + "\n"
    raise ValueError(f"unknown record format {fmt!r}; expected one of {', '.join(RECORD_FORMATS)}")


# -- editing the analysis -------------------------------------------------------------

MAX_ROOT_CAUSE_CHARS = 10_000
MAX_ANALYSIS_ITEMS = 50
MAX_ANALYSIS_ITEM_CHARS = 2_000


def edited_analysis(
    previous: Analysis | None, changes: dict[str, Any], *, by: str, at: datetime
) -> Analysis:
    """``previous`` with ``changes`` applied (fields not given are kept)."""
    base = previous or Analysis()
    return Analysis(
        root_cause=changes.get("root_cause", base.root_cause),
        improvements=changes.get("improvements", base.improvements),
        lessons=changes.get("lessons", base.lessons),
        edited_by=by,
        edited_at=at,
    )
