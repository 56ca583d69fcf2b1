"""The journal keeps who did each mutation: approvals, circuit resets, sent signals."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

import orjson
import pytest

from remediator.domain.lifecycle import RemediationStatus
from remediator.domain.plans import ActionKind
from remediator.domain.signals import Signal, Source, Status
from remediator.journal.sqlite import SqliteJournal
from remediator.ports import DecisionRecord, NewRemediation

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def signal(n: int, *, received_by: str | None = None) -> Signal:
    return Signal(
        key=f"k{n}", source=Source.ALERTMANAGER, kind="HighErrorRate", status=Status.FIRING,
        service="checkout", namespace="shop", labels={"n": str(n)}, annotations={},
        starts_at=NOW, ends_at=None, received_at=NOW, received_by=received_by,
    )  # fmt: skip


async def awaiting(journal: SqliteJournal, rid: str, seq: int) -> None:
    remediation = NewRemediation(
        id=rid, signal_id=f"sig_{rid}", service="checkout", namespace="shop", rule="r",
        action=ActionKind.ROLLBACK, status=RemediationStatus.AWAITING_APPROVAL, reason=None, manual=False,
        automated=True, created_at=NOW, decision={"approvers": ["dba"]}, explanation="",
    )  # fmt: skip
    assert await journal.record_decisions(
        [DecisionRecord(signal_seq=seq, signal_id=f"sig_{rid}", service="checkout",
                        outcome="plan", reason=None, rule="r", decided_at=NOW, explanation="",
                        remediation=remediation)],
        cursor=seq - 1,
        through_seq=seq,
    )  # fmt: skip


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[SqliteJournal]:
    j = SqliteJournal(path=tmp_path / "journal.db")
    await j.open()
    yield j
    await j.close()


async def test_an_approval_keeps_the_principal_its_roles_and_comment(
    journal: SqliteJournal,
) -> None:
    await awaiting(journal, "rem_a", 1)
    await awaiting(journal, "rem_b", 2)
    assert await journal.approve_remediation(
        "rem_a", by="dana", at=NOW, roles=("dba", "tech-lead"), comment="line one\nline two"
    )
    assert await journal.approve_remediation("rem_b", by="local:root", at=NOW)  # break-glass
    a, b = await journal.get_remediation("rem_a"), await journal.get_remediation("rem_b")
    assert a is not None and b is not None
    assert (a.approved_by, a.approved_as, a.approval_comment) == (
        "dana", ("dba", "tech-lead"), "line one\nline two"
    )  # fmt: skip
    assert (b.approved_by, b.approved_as, b.approval_comment) == ("local:root", None, None)
    listed = {i.id: i for i in (await journal.list_remediations()).items}
    assert listed["rem_a"].approved_as == ("dba", "tech-lead")
    assert listed["rem_a"].to_api()["approved_as"] == ["dba", "tech-lead"]


async def test_a_circuit_change_keeps_who_made_it(journal: SqliteJournal) -> None:
    assert (await journal.circuit()).changed_by is None
    await journal.set_circuit(open=True, reason="3 failed", at=NOW)  # the engine
    assert (await journal.circuit()).changed_by is None
    await journal.set_circuit(open=False, reason=None, at=NOW + timedelta(minutes=1), by="ops")
    record = await journal.circuit()
    assert (record.open, record.changed_by, record.changed_at) == (
        False, "ops", NOW + timedelta(minutes=1)
    )  # fmt: skip


async def test_a_signal_keeps_the_principal_that_sent_it(journal: SqliteJournal) -> None:
    [sent, kafka] = await journal.record_signals([signal(1, received_by="alertmanager"), signal(2)])
    items = {i["id"]: i for i in (await journal.list_signals()).items}
    assert items[sent.signal_id]["received_by"] == "alertmanager"
    assert items[kafka.signal_id]["received_by"] is None
    stored = await journal.get_signal(sent.signal_id)
    assert stored is not None and stored.received_by == "alertmanager"


async def test_each_item_of_a_page_has_the_cursor_that_continues_after_it(
    journal: SqliteJournal,
) -> None:
    await journal.record_signals([signal(n) for n in range(5)])
    page = await journal.list_signals(limit=3)
    assert len(page.item_cursors) == 3 and page.next_cursor == page.item_cursors[-1]
    rest = await journal.list_signals(limit=10, cursor=page.item_cursors[0])
    assert [i["id"] for i in rest.items] == [i["id"] for i in page.items[1:]] + [
        i["id"] for i in (await journal.list_signals(limit=2, cursor=page.next_cursor)).items
    ]
    for n in range(3):
        await awaiting(journal, f"rem_{n}", n + 1)
    remediations = await journal.list_remediations(limit=2)
    after_first = await journal.list_remediations(cursor=remediations.item_cursors[0])
    assert [i.id for i in after_first.items] == ["rem_1", "rem_0"]


async def test_a_journal_of_schema_6_gains_the_columns_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    scripts = sorted(
        entry
        for entry in resources.files("remediator.journal.sqlite").joinpath("migrations").iterdir()
        if entry.name.endswith(".sql") and int(entry.name.split("_")[0]) <= 6
    )
    with sqlite3.connect(path) as conn:
        for entry in scripts:
            conn.executescript(entry.read_text())
        conn.execute("PRAGMA user_version = 6")
        conn.execute(
            "INSERT INTO remediations (id, signal_id, service, status, created_at, updated_at,"
            " decision, explanation, approved_by, approved_at) VALUES ('rem_old', 's',"
            " 'checkout', 'planned', '2026-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z',"
            " '{}', '', 'alice', '2026-01-01T00:01:00.000000Z')"
        )
        conn.execute(
            "UPDATE engine_state SET value = ? WHERE name = 'circuit'",
            (orjson.dumps({"open": True, "reason": "old", "changed_at": None}).decode(),),
        )
    journal = SqliteJournal(path=path)
    await journal.open()
    try:
        item = await journal.get_remediation("rem_old")
        assert item is not None
        assert (item.approved_by, item.approved_as, item.approval_comment) == (
            "alice", None, None
        )  # fmt: skip
        assert (await journal.circuit()).changed_by is None
    finally:
        await journal.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] >= 8
