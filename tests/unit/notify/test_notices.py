"""Slack Block Kit and email content for a remediation, within Slack's limits."""

from __future__ import annotations

import re
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

import pytest

from remediator.domain.lifecycle import RemediationStatus
from remediator.domain.notices import (
    SlackMessageRef,
    clip,
    email_html,
    email_message_id,
    email_subject,
    email_text,
    slack_blocks,
    slack_escape,
    slack_text,
)
from remediator.domain.record import RollbackRecord, TimelineEntry
from tests.unit.notify import samples
from tests.unit.notify.blockkit import assert_valid_blocks

RECORDS = pytest.mark.parametrize("make", samples.ALL.values(), ids=samples.ALL.keys())


def all_text(blocks: list[dict[str, Any]]) -> str:
    out: list[str] = []
    for block in blocks:
        if "text" in block:
            out.append(block["text"]["text"])
        out += [f["text"] for f in block.get("fields", [])]
        for element in block.get("elements", []):
            text = element.get("text")
            out += [text["text"] if isinstance(text, dict) else text] if text else []
    return "\n".join(out)


@RECORDS
def test_blocks_are_valid_and_carry_the_facts(make: Callable[[], RollbackRecord]) -> None:
    record = make()
    blocks = slack_blocks(record, record_url=samples.RECORD_URL)
    assert_valid_blocks(blocks)
    assert blocks[0]["type"] == "header"
    assert record.status.label in blocks[0]["text"]["text"]
    fields = {f["text"].split("\n", 1)[0]: f["text"].split("\n", 1)[1] for f in blocks[1]["fields"]}
    assert fields["*Service*"] == "shop/checkout"
    assert fields["*Trigger*"] == "HighErrorRate (alertmanager, severity critical)"
    assert fields["*Versions*"] == "v1.1.0 → v1.0.0 (revision 42 → 41)"
    assert fields["*Status*"] == record.status.value
    assert fields["*Action*"] == record.action
    text = all_text(blocks)
    assert "*Timeline*" in text
    for entry in record.timeline:
        assert entry.step in text
    # Links: the alert's generatorURL (with & escaped for mrkdwn), runbook, record.
    assert f"<{slack_escape(samples.GENERATOR_URL)}|Alert source>" in text
    assert f"<{samples.RUNBOOK_URL}|Runbook>" in text
    assert f"<{samples.RECORD_URL}|Rollback record>" in text
    assert record.remediation_id in text


def test_timeline_lines_in_order() -> None:
    text = all_text(slack_blocks(samples.succeeded(), record_url=None))
    steps = ["detect", "decide", "rollout_undo", "verify_health", "finish"]
    positions = [text.index(f"` {s}:") for s in steps]
    assert positions == sorted(positions)
    assert "`14:34:00` verify_health: *passed* - 3/3 ready" in text


def test_many_long_timeline_entries_are_truncated_within_limits() -> None:
    timeline = tuple(
        TimelineEntry(
            at=samples.at(i), step=f"step-{i:04d}", status="done", detail="x" * 5000 + "<&>"
        )
        for i in range(1000)
    )
    record = samples.succeeded(
        timeline=timeline,
        reason="r" * 10_000,
        explanation="e" * 10_000,
        service="s" * 300,
        trigger=samples.trigger(kind="K" * 5000, summary="s" * 10_000),
        version_from="v" * 3000,
    )
    blocks = slack_blocks(record, record_url=samples.RECORD_URL)
    assert_valid_blocks(blocks)
    text = all_text(blocks)
    # The newest steps are kept; the rest are counted, pointing at the record.
    assert "step-0999" in text
    assert "step-0000" not in text
    assert "earlier steps omitted (full timeline in the record)" in text
    assert len(slack_text(record)) <= 3000


def test_escaping_for_slack_mrkdwn() -> None:
    record = samples.hostile()
    blocks = slack_blocks(record, record_url="javascript:x")
    assert_valid_blocks(blocks)
    text = all_text(blocks)
    assert "<script>" not in text
    assert "&lt;script&gt;" in text
    assert "javascript:" not in text  # neither the runbook annotation nor the record URL
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; friends" in text
    assert "<script>" not in slack_text(record)


def test_slack_text_is_a_one_line_summary() -> None:
    assert slack_text(samples.succeeded()) == (
        "checkout: rollback succeeded (v1.1.0 → v1.0.0 (revision 42 → 41)) - HighErrorRate"
    )
    assert "\n" not in slack_text(samples.needs_human())


def test_clip() -> None:
    assert clip("abc", 3) == "abc"
    assert clip("abcd", 3) == "ab…"


def test_message_ref_round_trips() -> None:
    ref = SlackMessageRef(channel="C001ALERTS", ts="1700000000.000001")
    assert SlackMessageRef.model_validate(ref.to_dict()) == ref


@RECORDS
def test_email_parts(make: Callable[[], RollbackRecord]) -> None:
    record = make()
    subject = email_subject(record)
    assert subject.startswith("[remediator] checkout: ")
    assert record.status.label in subject
    assert "v1.1.0 → v1.0.0" in subject
    text = email_text(record, record_url=samples.RECORD_URL)
    # Labels are padded to the longest one shown (approval facts add longer ones).
    assert re.search(rf"^Status: +{record.status.value}$", text, re.M)
    assert re.search(r"^Versions: +v1\.1\.0 → v1\.0\.0 \(revision 42 → 41\)$", text, re.M)
    assert f"Rollback record: {samples.RECORD_URL}" in text
    assert f"Runbook: {samples.RUNBOOK_URL}" in text
    html = email_html(record, record_url=samples.RECORD_URL)
    assert f'href="{samples.RECORD_URL}"' in html
    assert "<h2>Timeline</h2>" in html
    # The parts go into a real message without complaint.
    message = EmailMessage()
    message["Subject"] = subject
    message.set_content(text)
    message.add_alternative(html, subtype="html")


def test_email_subject_has_no_line_breaks() -> None:
    record = samples.succeeded(service="checkout", action="roll\r\nBcc: victim@example.com")
    subject = email_subject(record)
    assert "\n" not in subject
    assert "\r" not in subject
    EmailMessage()["Subject"] = subject


def test_email_text_timeline_and_results() -> None:
    text = email_text(samples.failed())
    assert "Failed: the remediation did not complete" in text
    assert "  2026-01-15 14:40:00 UTC  verify_health: failed - 0/3 ready after 540s" in text
    assert "  Health: failed - 0/3 pods ready" in text
    assert "  Performance: not run" in text


def test_email_html_escapes() -> None:
    html = email_html(samples.hostile())
    assert "<script>" not in html
    assert "javascript:" not in html


def test_every_status_has_an_emoji_header() -> None:
    for status in RemediationStatus:
        blocks = slack_blocks(samples.succeeded(status=status), record_url=None)
        assert blocks[0]["text"]["text"].startswith(":")


def test_annotations_cannot_mention_everyone() -> None:
    record = samples.succeeded(
        trigger=samples.trigger(kind="<!channel> <@U123> <!here>"), reason="<!everyone>"
    )
    blocks = slack_blocks(record, record_url=None)
    text = all_text(blocks) + slack_text(record)
    assert "<!" not in text
    assert "<@" not in text
    assert "&lt;!channel&gt;" in text


def test_clipping_never_cuts_an_entity_in_half() -> None:
    record = samples.succeeded(reason="&" * 5000)
    [why] = [
        b for b in slack_blocks(record, record_url=None) if b["type"] == "section" and "text" in b
    ][:1]
    text = why["text"]["text"]
    assert len(text) <= 3000
    assert text.endswith("&amp;…")


def test_slack_timeline_is_in_utc() -> None:
    from datetime import timedelta, timezone

    entry = TimelineEntry(
        at=samples.T0.astimezone(timezone(timedelta(hours=-5))), step="detect", status="done"
    )
    text = all_text(slack_blocks(samples.succeeded(timeline=(entry,)), record_url=None))
    assert "`14:30:00` detect: *done*" in text


def test_overlong_links_are_left_out_not_broken() -> None:
    long_url = "https://prometheus.example/graph?g0.expr=" + "x" * 2000
    record = samples.succeeded(trigger=samples.trigger(generator_url=long_url))
    blocks = slack_blocks(record, record_url=samples.RECORD_URL)
    assert_valid_blocks(blocks)
    text = all_text(blocks)
    assert "|Alert source>" not in text
    assert f"<{samples.RUNBOOK_URL}|Runbook>" in text


def test_email_message_id_is_stable_and_valid() -> None:
    first = email_message_id(dedup_key="rem_1:needs_human", domain="example.test")
    assert first == "<rem_1.needs_human@example.test>"
    assert email_message_id(dedup_key="rem_1:needs_human", domain="example.test") == first
    message = EmailMessage()
    message["Message-ID"] = email_message_id(dedup_key="a b<c>:x", domain="example.test")
    assert message["Message-ID"] == "<a.b.c..x@example.test>"


def buttons_of(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for b in blocks if b["type"] == "actions" for e in b["elements"]]


def test_a_plan_awaiting_approval_has_approve_and_reject_buttons_behind_a_confirmation() -> None:
    record = samples.awaiting_approval()
    blocks = slack_blocks(record, record_url=None, buttons=True)
    assert_valid_blocks(blocks)
    approve, reject = buttons_of(blocks)
    assert (approve["action_id"], approve["style"], approve["value"]) == (
        "remediator.approve", "primary", "rem_5",
    )  # fmt: skip
    assert (reject["action_id"], reject["style"], reject["value"]) == (
        "remediator.reject", "danger", "rem_5",
    )  # fmt: skip
    # One stray tap must not start or stop a production rollback.
    assert approve["confirm"]["title"]["text"] == "Approve this rollback?"
    assert "checkout" in approve["confirm"]["text"]["text"]
    assert reject["confirm"]["confirm"]["text"] == "Reject"
    assert len(approve["confirm"]["text"]["text"]) <= 300


def test_who_answered_and_who_is_awaited_are_on_the_message() -> None:
    text = all_text(slack_blocks(samples.awaiting_approval(), record_url=None, buttons=True))
    assert "requested by *rita*" in text
    assert "*pam* as product-manager approved at 2026-01-15 14:31:00 UTC" in text
    assert "checkout &lt;b&gt;is&lt;/b&gt; down" in text  # a comment is escaped
    assert "waiting for tech-lead" in text


def test_no_buttons_without_interactivity_or_once_the_plan_stops_waiting() -> None:
    waiting = samples.awaiting_approval()
    assert buttons_of(slack_blocks(waiting, record_url=None)) == []  # no signing secret
    for status in (RemediationStatus.PLANNED, RemediationStatus.REJECTED,
                   RemediationStatus.EXPIRED, RemediationStatus.CANCELLED):  # fmt: skip
        done = waiting.model_copy(update={"status": status})
        assert buttons_of(slack_blocks(done, record_url=None, buttons=True)) == []


def test_an_escalation_can_be_answered_from_where_it_is_seen() -> None:
    from remediator.domain.notices import escalation_blocks

    waiting = samples.awaiting_approval()
    seats = [{"seat": "tech-lead", "principals": ["lee"]}]
    blocks = escalation_blocks(waiting, seats, record_url=None, buttons=True)
    assert_valid_blocks(blocks)
    assert [b["action_id"] for b in buttons_of(blocks)] == [
        "remediator.approve", "remediator.reject",
    ]  # fmt: skip
    assert "Not answered: tech-lead (lee)" in all_text(blocks)
    assert buttons_of(escalation_blocks(waiting, seats, record_url=None)) == []
