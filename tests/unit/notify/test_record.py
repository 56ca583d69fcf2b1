"""Rollback records render in Markdown, HTML and JSON for every final status."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from html.parser import HTMLParser

import pytest
from pydantic import ValidationError

from remediator.domain.lifecycle import RemediationStatus
from remediator.domain.record import (
    CONTENT_TYPES,
    PLACEHOLDER,
    RECORD_FORMATS,
    Notice,
    RecordFormat,
    RollbackRecord,
    Stage,
    TimelineEntry,
    dedup_key,
    render,
    render_html,
    render_json,
    render_markdown,
    safe_url,
    stage_for,
)
from tests.unit.notify import samples

RECORDS = pytest.mark.parametrize("make", samples.ALL.values(), ids=samples.ALL.keys())


class _Collector(HTMLParser):
    """Collects tags, attributes and text, to look at HTML as a browser would."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend(attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> _Collector:
    collector = _Collector()
    collector.feed(html)
    collector.close()
    return collector


@RECORDS
def test_markdown_has_every_section(make: Callable[[], RollbackRecord]) -> None:
    record = make()
    md = render_markdown(record, record_url=samples.RECORD_URL)
    for heading in (
        "# Rollback record: shop/checkout",
        "## Basic information",
        "## Timeline",
        "## Results",
        "## Impact",
        "### Root cause",
        "### Improvements",
        "## Lessons learned",
        "## Links",
    ):
        assert heading in md
    assert f"- Status: {record.status.value}" in md
    assert "v1.1.0 → v1.0.0 (revision 42 → 41)" in md
    assert f"- Type: {record.mode}" in md
    assert f"<{samples.RECORD_URL}>" in md
    assert f"<{samples.RUNBOOK_URL}>" in md


@RECORDS
def test_timeline_is_in_time_order_in_every_format(make: Callable[[], RollbackRecord]) -> None:
    record = make()
    steps = [e.step for e in sorted(record.timeline, key=lambda e: e.at)]
    md = render_markdown(record)
    html = render_html(record)
    assert _positions(md, steps) == sorted(_positions(md, steps))
    assert _positions(html, steps) == sorted(_positions(html, steps))
    assert [e["step"] for e in render_json(record)["timeline"]] == steps


def _positions(text: str, steps: list[str]) -> list[int]:
    section = text[text.index("Timeline") :]
    positions, start = [], 0
    for step in steps:
        start = section.index(step, start)
        positions.append(start)
    return positions


def test_succeeded_record_content() -> None:
    record = samples.succeeded()
    assert [e.step for e in record.timeline] == [
        "detect",
        "decide",
        "rollout_undo",
        "verify_health",
        "finish",
    ]
    md = render_markdown(record)
    assert "- Duration: 4 min 30 s" in md
    assert "- Health: passed - 3/3 pods ready" in md
    assert "- Database: skipped - no migration involved" in md
    assert "1. 2026-01-15 14:30:00 UTC - detect: done - HighErrorRate firing" in md
    assert "- Time: 2026-01-15 14:30:30 UTC → 2026-01-15 14:35:00 UTC" in md
    assert "> " not in md  # success needs no status note
    data = render_json(record)
    assert data["impact"]["duration_seconds"] == 270.0
    assert data["version_from"] == "v1.1.0"
    assert data["version_to"] == "v1.0.0"
    assert data["mode"] == "automatic"
    assert data["links"] == {"alert": samples.GENERATOR_URL, "runbook": samples.RUNBOOK_URL}


def test_failed_record_shows_failed_checks() -> None:
    md = render_markdown(samples.failed())
    assert "> Failed:" in md
    assert "- Health: failed - 0/3 pods ready" in md
    assert "- Application: failed - CrashLoopBackOff" in md
    assert "- Performance: not run" in md
    assert "verify_health: failed - 0/3 ready after 540s" in md
    html = render_html(samples.failed())
    assert '<td class="failed">failed</td><td>0/3 pods ready</td>' in html


def test_needs_human_record_is_manual_and_still_open() -> None:
    record = samples.needs_human()
    md = render_markdown(record)
    assert "> Needs a human:" in md
    assert "- Type: manual" in md
    assert "- Approvers: alice, bob" in md
    assert "(waiting for people)" in md
    assert "- Duration: -" in md
    data = render_json(record)
    assert data["status"] == "needs_human"
    assert data["mode"] == "manual"
    assert data["impact"]["duration_seconds"] is None


def test_dry_run_record_says_nothing_changed() -> None:
    record = samples.dry_run()
    md = render_markdown(record)
    assert "> Dry run: nothing was changed" in md
    assert "(decided)" in md
    assert "rollout_undo: would run - to rev 41" in md
    assert "Dry run: nothing was changed" in render_html(record)
    assert render_json(record)["status"] == "dry-run"


@RECORDS
def test_empty_analysis_is_to_be_filled_in(make: Callable[[], RollbackRecord]) -> None:
    record = make()
    assert not record.root_cause
    md = render_markdown(record)
    # root cause, improvements, lessons, impact users and data
    assert md.count(f"_{PLACEHOLDER}_") == 5
    assert parse(render_html(record)).text.count(PLACEHOLDER) == 5
    data = render_json(record)
    assert (data["root_cause"], data["improvements"], data["lessons"]) == ("", [], [])


def test_filled_in_analysis_replaces_placeholders() -> None:
    record = samples.succeeded(
        root_cause="cache hit ratio fell after v1.1.0",
        improvements=("load test caching", "alert on hit ratio"),
        lessons=("rehearse rollbacks",),
        impact={"scope": "global", "users": "about 1000", "data": "none"},
    )
    md = render_markdown(record)
    assert PLACEHOLDER not in md
    assert "1. load test caching\n2. alert on hit ratio" in md
    html = render_html(record)
    assert PLACEHOLDER not in html
    assert "<ol><li>rehearse rollbacks</li></ol>" in html


@RECORDS
def test_html_is_self_contained(make: Callable[[], RollbackRecord]) -> None:
    page = parse(render_html(make(), record_url=samples.RECORD_URL))
    assert page.tags[:2] == ["html", "head"]
    assert "script" not in page.tags
    assert not {"link", "img", "iframe"} & set(page.tags)
    hrefs = [v for k, v in page.attrs if k == "href"]
    assert hrefs == [samples.GENERATOR_URL, samples.RUNBOOK_URL, samples.RECORD_URL]
    assert not [
        k for k, _ in page.attrs if k not in ("lang", "charset", "class", "href", "datetime")
    ]


def test_hostile_annotations_are_escaped_everywhere() -> None:
    record = samples.hostile()
    html = render_html(record, record_url="javascript:steal()")
    page = parse(html)
    assert "script" not in page.tags
    assert "img" not in page.tags
    assert "iframe" not in page.tags
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;img" in html
    # The text a browser shows is the original annotation, unchanged.
    assert samples.HOSTILE_SUMMARY in "".join(page.text)
    assert "</td><script>" not in html
    # javascript: URLs are never linked, from an annotation or from the caller.
    assert "javascript:" not in html
    hrefs = [v for k, v in page.attrs if k == "href"]
    assert hrefs == [samples.GENERATOR_URL]

    md = render_markdown(record, record_url="javascript:steal()")
    # Every "<" from data is backslash-escaped: no raw HTML reaches a Markdown viewer.
    assert re.search(r"(?<!\\)<(script|img|iframe|/td)", md) is None
    assert "\\<script\\>" in md
    assert "javascript:" not in md

    data = render_json(record)
    assert data["trigger"]["summary"] == samples.HOSTILE_SUMMARY  # JSON carries data as is
    assert "runbook" not in data["links"]
    json.dumps(data)


@pytest.mark.parametrize(
    ("url", "safe"),
    [
        ("https://example.com/x?a=1&b=2", True),
        ("http://10.0.0.1:9090/graph", True),
        ("HTTPS://EXAMPLE.COM", True),
        ("javascript:alert(1)", False),
        ("JavaScript:alert(1)", False),
        ("data:text/html,<script>", False),
        ("//evil.example/x", False),
        ("https://", False),
        ("https://a.example/\nSet-Cookie: x", False),
        ("", False),
        (None, False),
    ],
)
def test_safe_url(url: str | None, safe: bool) -> None:
    assert (safe_url(url) is not None) is safe


def test_record_is_frozen_keyword_only_and_round_trips() -> None:
    record = samples.succeeded()
    with pytest.raises(ValidationError):
        record.status = RemediationStatus.FAILED  # type: ignore[misc]
    with pytest.raises(TypeError):
        RollbackRecord("rem_x")  # type: ignore[misc, call-arg]
    assert RollbackRecord.model_validate(record.to_dict()) == record
    assert RollbackRecord.model_validate(json.loads(json.dumps(record.to_dict()))) == record


def test_naive_times_and_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError):
        samples.succeeded(created_at=datetime(2026, 1, 1))
    with pytest.raises(ValidationError):
        samples.succeeded(colour="red")
    with pytest.raises(ValidationError):
        samples.succeeded(status="exploded")


def test_duration_never_negative_and_formats_hours() -> None:
    assert samples.succeeded(finished_at=samples.at(-5)).duration == timedelta(0)
    md = render_markdown(samples.succeeded(finished_at=samples.at(30 + 3723)))
    assert "- Duration: 1 h 2 min 3 s" in md


def test_markdown_single_line_values_cannot_break_structure() -> None:
    record = samples.succeeded(reason="line one\n# injected heading\n- injected item")
    md = render_markdown(record)
    assert "\n# injected" not in md
    assert "\n- injected" not in md
    assert re.search(r"- Reason: line one \\# injected heading - injected item", md)


def test_notice_dedup_key_and_stages() -> None:
    notice = Notice(remediation_id="rem_1", stage=Stage.STARTED, service="checkout")
    assert notice.dedup_key == "rem_1:started"
    assert dedup_key(remediation_id="rem_1", stage=Stage.NEEDS_HUMAN) == "rem_1:needs_human"
    assert Notice.model_validate(notice.to_dict()) == notice
    assert stage_for(RemediationStatus.RUNNING) is Stage.STARTED
    assert stage_for(RemediationStatus.DRY_RUN) is Stage.SKIPPED
    # Approved and escalated happen to a plan while it waits: stages, not statuses.
    assert {stage_for(s) for s in RemediationStatus} == set(Stage) - {
        Stage.VOTED, Stage.APPROVED, Stage.ESCALATED,
    }  # fmt: skip


@RECORDS
@pytest.mark.parametrize("fmt", RECORD_FORMATS)
def test_render_dispatches_by_format(make: Callable[[], RollbackRecord], fmt: RecordFormat) -> None:
    record = make()
    body = render(record, fmt=fmt, record_url=samples.RECORD_URL)
    assert CONTENT_TYPES[fmt].split(";")[0] in ("text/markdown", "text/html", "application/json")
    if fmt == "json":
        assert json.loads(body) == render_json(record, record_url=samples.RECORD_URL)
        assert '"version_from": "v1.1.0"' in body
    elif fmt == "md":
        assert body == render_markdown(record, record_url=samples.RECORD_URL)
    else:
        assert body == render_html(record, record_url=samples.RECORD_URL)


def test_render_refuses_unknown_formats() -> None:
    with pytest.raises(ValueError, match="unknown record format 'pdf'"):
        render(samples.succeeded(), fmt="pdf")  # type: ignore[arg-type]


def test_numeric_revisions_are_accepted_as_labels() -> None:
    record = samples.succeeded(revision_from=42, revision_to=41)
    assert (record.revision_from, record.revision_to) == ("42", "41")


def test_times_render_in_utc_whatever_their_zone() -> None:
    from datetime import timezone

    plus_two = timezone(timedelta(hours=2))
    record = samples.succeeded(
        timeline=(TimelineEntry(at=samples.T0.astimezone(plus_two), step="detect", status="done"),)
    )
    assert "1. 2026-01-15 14:30:00 UTC - detect: done" in render_markdown(record)


@pytest.mark.parametrize("status", list(RemediationStatus))
@pytest.mark.parametrize("fmt", RECORD_FORMATS)
def test_every_status_renders_in_every_format(status: RemediationStatus, fmt: RecordFormat) -> None:
    body = render(samples.succeeded(status=status), fmt=fmt)
    assert status.value in body


def test_markdown_keeps_identifiers_legible_but_neutralises_emphasis() -> None:
    md = render_markdown(samples.succeeded(reason="_hidden_ in rem_1 and *bold*"))
    assert "- Reason: \\_hidden\\_ in rem_1 and \\*bold\\*" in md
    assert "- Remediation: rem_1" in md
