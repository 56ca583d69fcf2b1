"""``remediator journal copy``: a SQLite journal at schema 8 (the release before
PostgreSQL), copied into PostgreSQL, reads back the same through the journal's ports,
and the daemon continues there where it stopped."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from pydantic import SecretStr

from remediator.domain.approvals import ApprovalConfig, ApprovalRequest, Verdict, Vote, policy_for
from remediator.domain.automation import AutomationLevel
from remediator.domain.errors import PermanentError
from remediator.domain.lifecycle import RemediationStatus, StepStatus
from remediator.domain.notices import SlackMessageRef
from remediator.domain.plans import ActionKind
from remediator.journal.copy import SourceInUse, copy_journal
from remediator.journal.postgres import PostgresJournal
from remediator.journal.postgres.importer import NotEmpty
from remediator.journal.sqlite import SqliteJournal
from remediator.journal.sqlite.schema import schema_version
from remediator.ports import CircuitRecord
from tests.contract.builders import plant, signal
from tests.pgdb import fresh_database

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent
REPO = HERE.parents[2]
T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
COPIED_AT = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
CHANNEL = "kafka:remediator.outcomes"


def utc(value: datetime) -> str:
    return value.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def at(minutes: int) -> str:
    return utc(T0 + timedelta(minutes=minutes))


def body(n: int) -> str:
    return orjson.dumps(
        {"labels": {"alertname": "HighErrorRate", "n": str(n)}, "annotations": {"s": "ü"},
         "raw": {"n": n}, "received_by": "alertmanager"}
    ).decode()  # fmt: skip


def decision_doc(action: str) -> str:
    return orjson.dumps({"plan": {"action": action, "steps": [{"kind": "rollout_undo"}]}}).decode()


def write_v8_journal(path: Path, *, signals: int = 7) -> None:
    """A journal as the daemon before issue 14 left it, row by row."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")  # as the daemon keeps it
        conn.executescript((HERE / "fixtures" / "sqlite_v8.sql").read_text())
        conn.execute("BEGIN")
        # Seqs 1..signals, then 3 and 4 forgotten by a prune: the gap must survive.
        for n in range(1, signals + 1):
            conn.execute(
                "INSERT INTO signals (seq, id, key, source, kind, status, service, namespace,"
                " starts_at, ends_at, received_at, body) VALUES (?, ?, ?, 'alertmanager',"
                " 'HighErrorRate', 'firing', 'checkout', 'shop', ?, NULL, ?, ?)",
                (n, f"sig_{n:04d}", f"key-{n}", at(n), at(n), body(n)),
            )
        conn.execute("DELETE FROM signals WHERE seq IN (3, 4)")
        conn.execute("UPDATE engine_state SET value = '5' WHERE name = 'decided_seq'")
        remediations = [
            # id, signal, status, claimed_by, claimed_at, finished_at, approved..., minutes
            ("rem_done", 1, "succeeded", "pod-0", at(10), at(12), None, None, None, None),
            ("rem_running", 2, "running", "pod-0", at(20), None, None, None, None, None),
            ("rem_rehearsed", 5, "running", "pod-0", at(30), at(31), None, None, None, None),
            ("rem_waiting", 5, "awaiting_approval", None, None, None, None, None, None, None),
            ("rem_approved", 5, "planned", None, None, None, "alice", at(40), '["sre"]', "ok"),
        ]
        for seq, (rid, sig, status, by, claimed, finished, approver, approved, roles,
                  comment) in enumerate(remediations, 1):  # fmt: skip
            conn.execute(
                "INSERT INTO remediations (seq, id, signal_id, service, namespace, rule, action,"
                " status, reason, manual, automated, created_at, updated_at, decision,"
                " explanation, claimed_by, claimed_at, finished_at, approved_by, approved_at,"
                " approved_as, approval_comment) VALUES (?, ?, ?, 'checkout', 'shop',"
                " 'rollback-on-errors', 'rollback', ?, NULL, 0, 1, ?, ?, ?, 'why', ?, ?, ?,"
                " ?, ?, ?, ?)",
                (seq * 10, rid, f"sig_{sig:04d}", status, at(seq), finished or at(seq),
                 decision_doc("rollback"), by, claimed, finished, approver, approved, roles,
                 comment),
            )  # fmt: skip
        for n in (1, 2, 5):
            conn.execute(
                "INSERT INTO decisions (signal_seq, signal_id, service, outcome, reason, rule,"
                " remediation_id, decided_at, explanation) VALUES (?, ?, 'checkout', 'plan',"
                " NULL, 'rollback-on-errors', ?, ?, 'decided')",
                (n, f"sig_{n:04d}", {1: "rem_done", 2: "rem_running", 5: "rem_waiting"}[n],
                 at(n)),
            )  # fmt: skip
        conn.executemany(
            "INSERT INTO remediation_steps (remediation_id, idx, kind, status, started_at,"
            " finished_at, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                ("rem_done", 0, "rollout_undo", "succeeded", at(10), at(11), '{"revision": 3}'),
                ("rem_done", 1, "wait_rollout", "succeeded", at(11), at(12), "{}"),
                ("rem_running", 0, "rollout_undo", "started", at(20), None, "{}"),
            ],
        )
        conn.executemany(
            "INSERT INTO outbox (seq, id, channel, key, payload, created_at, attempts,"
            " last_error, published_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (1, "out-1", CHANNEL, "checkout", '{"n": 1}', at(10), 0, None, at(10)),
                (2, "out-2", CHANNEL, "checkout", '{"n": 2}', at(20), 3, "broker down", None),
                (3, "out-3", CHANNEL, None, '{"n": 3}', at(21), 5, "dead: too big", at(22)),
                (4, "out-4", "slack", None, '{"n": 4}', at(23), 0, None, None),
            ],
        )
        conn.execute("INSERT INTO slack_messages VALUES ('rem_done', 'C42', '1700.1')")
        circuit = {"open": True, "reason": "3 failures", "changed_at": at(50),
                   "changed_by": "bob"}  # fmt: skip
        conn.execute(
            "UPDATE engine_state SET value = ? WHERE name = 'circuit'",
            (orjson.dumps(circuit).decode(),),
        )
        conn.execute(
            "INSERT INTO heartbeat (id, beat_at, instance) VALUES (1, ?, 'pod-0')",
            (utc(COPIED_AT - timedelta(minutes=10)),),
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


@pytest.fixture
async def target(postgres: Any) -> AsyncIterator[SecretStr]:
    async with fresh_database(postgres.endpoints["postgres_dsn"]) as dsn:
        yield dsn


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "remediator.db"
    write_v8_journal(path)
    return path


class Lines:
    def __init__(self) -> None:
        self.seen: list[tuple[str, int, int]] = []

    def __call__(self, table: str, done: int, total: int) -> None:
        self.seen.append((table, done, total))


async def copy(source: Path, target: SecretStr, **options: Any) -> Any:
    return await copy_journal(source=source, target=target, progress=options.pop("progress",
                              Lines()), now=COPIED_AT, **options)  # fmt: skip


async def test_a_copied_journal_reads_back_the_same_and_continues(
    source: Path, target: SecretStr
) -> None:
    lines = Lines()
    report = await copy(source, target, progress=lines)
    assert report.version == 8
    assert report.counts == {
        "signals": 5, "decisions": 3, "remediations": 5, "remediation_steps": 3, "outbox": 4,
        "slack_messages": 1, "approval_requests": 1, "approval_votes": 0,
        "automation_levels": 0, "record_analysis": 0, "decision cursor": 5,
        "circuit changes": 1,
    }  # fmt: skip
    assert ("signals", 5, 5) in lines.seen and ("outbox", 4, 4) in lines.seen

    journal = PostgresJournal(dsn=target, instance="pod-new", pool_size=2)
    await journal.open()
    try:
        # Signals, in their order, with the prune's gap; the cursor where it was.
        page = await journal.list_signals(limit=100)
        assert [i["id"] for i in page.items] == [f"sig_{n:04d}" for n in (7, 6, 5, 2, 1)]
        assert page.item_cursors == ["7", "6", "5", "2", "1"]
        first = await journal.get_signal("sig_0001")
        assert first is not None
        assert (first.key, first.service, first.received_by) == ("key-1", "checkout",
                                                                 "alertmanager")  # fmt: skip
        assert first.received_at == T0 + timedelta(minutes=1)
        assert dict(first.annotations) == {"s": "ü"}
        undecided = await journal.undecided_signals(limit=10)
        assert undecided.cursor == 5
        assert [(s.seq, s.signal.id) for s in undecided.signals] == [(6, "sig_0006"),
                                                                     (7, "sig_0007")]  # fmt: skip
        # Remediations with their claims, steps and approvals.
        done = await journal.get_remediation("rem_done")
        assert done is not None
        assert (done.status, done.claimed_by, done.action) == (
            RemediationStatus.SUCCEEDED, "pod-0", ActionKind.ROLLBACK,
        )  # fmt: skip
        assert done.finished_at == T0 + timedelta(minutes=12)
        assert done.decision == {
            "plan": {"action": "rollback", "steps": [{"kind": "rollout_undo"}]}
        }
        assert done.steps is not None
        assert [(s.idx, s.status, s.detail) for s in done.steps] == [
            (0, StepStatus.SUCCEEDED, {"revision": 3}), (1, StepStatus.SUCCEEDED, {}),
        ]  # fmt: skip
        rehearsed = await journal.get_remediation("rem_rehearsed")
        assert rehearsed is not None and rehearsed.status is RemediationStatus.DRY_RUN
        approved = await journal.get_remediation("rem_approved")
        assert approved is not None
        assert (approved.approved_by, approved.approved_as, approved.approval_comment) == (
            "alice", ("sre",), "ok",
        )  # fmt: skip
        listed = await journal.list_remediations(limit=10)
        assert [r.id for r in listed.items] == ["rem_approved", "rem_waiting", "rem_rehearsed",
                                                "rem_running", "rem_done"]  # fmt: skip
        # The stopped daemon's claim is recovered like a silent replica's.
        claims = await journal.unfinished_claims(holder="pod-new", stale_before=COPIED_AT)
        assert [r.id for r in claims] == ["rem_running"]
        assert claims[0].steps is not None and claims[0].steps[0].status is StepStatus.STARTED
        assert await journal.take_over_claim("rem_running", from_holder="pod-0", by="pod-new",
                                             at=COPIED_AT)  # fmt: skip
        # A plan waiting since before approval requests gets the default request.
        waiting = await journal.get_remediation("rem_waiting")
        assert waiting is not None and waiting.approval is not None
        assert waiting.approval.request.expires_at == waiting.created_at + timedelta(hours=4)
        assert [s.label for s in waiting.approval.request.policy.seats] == ["any approver"]
        # The approved plan is runnable; the waiting one still waits, and can be approved.
        assert [r.id for r in await journal.runnable_remediations(limit=10)] == ["rem_approved"]
        assert await journal.approve_remediation("rem_waiting", by="carol", at=COPIED_AT)
        # The outbox: published ones stay done; the rest is relayed.
        assert await journal.outbox_backlog() == {CHANNEL: 1, "slack": 1}
        pending = await journal.pending(channel=CHANNEL, limit=10, holder="pod-new",
                                        at=COPIED_AT, lease_seconds=30)  # fmt: skip
        assert [(p.message.id, p.attempts, p.message.payload) for p in pending] == [
            ("out-2", 3, {"n": 2})
        ]
        assert await journal.circuit() == CircuitRecord(
            open=True, reason="3 failures", changed_at=T0 + timedelta(minutes=50),
            changed_by="bob",
        )  # fmt: skip
        assert await journal.slack_ref("rem_done") == SlackMessageRef(channel="C42", ts="1700.1")
        # New history continues after the copied one.
        (new,) = await journal.record_signals([signal(1)])
        (again,) = await journal.record_signals([signal(1)])
        assert not new.duplicate and again.duplicate
        later = await journal.undecided_signals(limit=10)
        assert [s.seq for s in later.signals][:2] == [6, 7]
        assert later.signals[2].seq > 7
        more = await journal.list_remediations(limit=10)
        assert len(more.items) == 5
    finally:
        await journal.close()


async def test_a_target_with_history_is_refused_and_left_alone(
    source: Path, target: SecretStr
) -> None:
    await copy(source, target)
    with pytest.raises(NotEmpty, match="not empty"):
        await copy(source, target)
    conn = await asyncpg.connect(target.get_secret_value())
    try:
        assert await conn.fetchval("SELECT count(*) FROM signals") == 5
    finally:
        await conn.close()


async def test_a_source_with_a_fresh_heartbeat_is_refused(
    tmp_path: Path, target: SecretStr
) -> None:
    path = tmp_path / "busy.db"
    write_v8_journal(path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("UPDATE heartbeat SET beat_at = ?", (utc(COPIED_AT - timedelta(seconds=5)),))
    conn.close()
    with pytest.raises(SourceInUse, match="'pod-0' wrote a heartbeat 5s ago: stop it first"):
        await copy(path, target)
    report = await copy(path, target, ignore_heartbeat=True)
    assert report.counts["signals"] == 5


async def test_a_source_written_during_the_copy_leaves_the_target_empty(
    source: Path, target: SecretStr
) -> None:
    def daemon_writes(table: str, done: int, total: int) -> None:
        if table == "outbox" and done == 0:
            writer = sqlite3.connect(source, isolation_level=None)
            writer.execute("UPDATE engine_state SET value = '6' WHERE name = 'decided_seq'")
            writer.close()

    with pytest.raises(SourceInUse, match="changed while it was copied"):
        await copy(source, target, progress=daemon_writes)
    conn = await asyncpg.connect(target.get_secret_value())
    try:
        assert await conn.fetchval("SELECT count(*) FROM signals") == 0
        assert await conn.fetchval("SELECT seq FROM decision_cursor") == 0
    finally:
        await conn.close()
    report = await copy(source, target)  # stopped now: the copy goes through
    assert report.counts["decision cursor"] == 6


@pytest.mark.parametrize("version", [7, 14])
async def test_an_unknown_schema_version_is_refused(
    tmp_path: Path, target: SecretStr, version: int
) -> None:
    path = tmp_path / "odd.db"
    write_v8_journal(path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.close()
    with pytest.raises(PermanentError, match=f"journal schema version {version}"):
        await copy(path, target)


async def test_approval_requests_and_votes_are_copied(tmp_path: Path, target: SecretStr) -> None:
    path = tmp_path / "v10.db"
    journal = SqliteJournal(path=path, instance="pod-0")
    await journal.open()
    try:
        policy = policy_for(approvers=("dba", "tech-lead"), response_time=timedelta(minutes=15),
                            emergency=True, config=ApprovalConfig())  # fmt: skip
        request = ApprovalRequest(policy=policy, requested_at=T0, requester="rita",
                                  scenario="data_consistency", reason="orders lost",
                                  target="41")  # fmt: skip
        rid = await plant(journal, status=RemediationStatus.AWAITING_APPROVAL, approval=request)
        await journal.mark_escalated(rid, at=T0 + timedelta(minutes=15))
        await journal.cast_vote(rid, vote=Vote(principal="lee", verdict=Verdict.APPROVE,
                                               roles=("tech-lead",), at=T0 + timedelta(minutes=20),
                                               comment="go"))  # fmt: skip
        await journal.close_review(rid, by="pat", at=T0 + timedelta(days=1), comment="fine")
        before = await journal.get_remediation(rid)
    finally:
        await journal.close()
    report = await copy(path, target)
    assert report.version == schema_version()
    assert (report.counts["approval_requests"], report.counts["approval_votes"]) == (1, 1)
    copied = PostgresJournal(dsn=target, instance="pod-new", pool_size=2)
    await copied.open()
    try:
        after = await copied.get_remediation(rid)
    finally:
        await copied.close()
    assert before is not None and after is not None
    assert after.approval == before.approval
    assert after.approval is not None and after.approval.request.review is not None


async def test_a_large_journal_is_copied_in_chunks(tmp_path: Path, target: SecretStr) -> None:
    path = tmp_path / "large.db"
    write_v8_journal(path, signals=12_345)
    lines = Lines()
    report = await copy(path, target, progress=lines)
    assert report.counts["signals"] == 12_343  # two were pruned
    steps = [done for table, done, _ in lines.seen if table == "signals"]
    assert steps == [0, 5000, 10_000, 12_343]


async def test_the_command_copies_and_never_prints_the_password(
    source: Path, target: SecretStr
) -> None:
    """As an operator runs it, the DSN from a file (REMEDIATOR_JOURNAL__URL_FILE)."""
    dsn_file = source.parent / "dsn"
    dsn_file.write_text(target.get_secret_value() + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMEDIATOR_")}
    env |= {"PYTHONPATH": str(REPO), "REMEDIATOR_JOURNAL__URL_FILE": str(dsn_file)}
    # The heartbeat in the fixture is 10 minutes older than the fixed "now" of the
    # other tests, and years older than today.
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "remediator", "journal", "copy", "--from", f"sqlite:///{source}",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    text = out.decode() + err.decode()
    assert process.returncode == 0, text
    assert "remediator-test-password" not in text
    assert "postgresql://remediator:***@" in text
    assert "signals: 5 of 5" in text
    assert "decision cursor" in text and "circuit            open" in text


async def fill_through_the_ports(journal: Any) -> None:
    """History written the way the daemon writes it, through the journal's roles."""
    from tests.contract.builders import NOW, decision, message, new_remediation

    await journal.record_signals([signal(n) for n in range(1, 9)])
    batch = await journal.undecided_signals(limit=5)
    statuses = [RemediationStatus.PLANNED, RemediationStatus.PLANNED,
                RemediationStatus.AWAITING_APPROVAL, RemediationStatus.DRY_RUN, None]  # fmt: skip
    records, ids = [], []
    for stored, status in zip(batch.signals, statuses, strict=True):
        new = None if status is None else new_remediation(stored.signal, status=status)
        records.append(decision(stored.seq, stored.signal, new))
        ids.append(None if new is None else new.id)
    assert await journal.record_decisions(
        records, cursor=batch.cursor, through_seq=batch.signals[-1].seq, outbox=[message(1)]
    )
    done, running, waiting, rehearsal, _ = ids
    later = NOW + timedelta(minutes=5)
    assert await journal.claim_remediation(done, by="pod-0", at=NOW, to=RemediationStatus.RUNNING)
    await journal.step_started(done, holder="pod-0", idx=0, kind="rollout_undo", at=NOW)
    await journal.step_finished(done, holder="pod-0", idx=0, status=StepStatus.SUCCEEDED,
                                detail={"revision": 4}, at=later)  # fmt: skip
    await journal.finish_remediation(done, holder="pod-0", status=RemediationStatus.SUCCEEDED,
                                     reason=None, at=later, outbox=[message(2)])  # fmt: skip
    assert await journal.claim_remediation(running, by="pod-0", at=later,
                                           to=RemediationStatus.RUNNING)  # fmt: skip
    await journal.step_started(running, holder="pod-0", idx=0, kind="rollout_undo", at=later)
    assert await journal.claim_remediation(rehearsal, by="pod-0", at=later,
                                           to=RemediationStatus.DRY_RUN)  # fmt: skip
    await journal.finish_remediation(rehearsal, holder="pod-0", status=RemediationStatus.DRY_RUN,
                                     reason="rehearsed", at=later)  # fmt: skip
    assert waiting is not None
    await journal.enqueue([message(3), message(4, channel="slack")])
    await journal.mark_published(ids=["msg-1"], at=later)
    leased = await journal.pending(channel=CHANNEL, limit=1, holder="pod-0", at=later,
                                   lease_seconds=30)  # fmt: skip
    await journal.mark_failed_attempt(ids=[p.message.id for p in leased], error="broker down")
    await journal.set_circuit(open=True, reason="breaker", at=later, by="bob")
    await journal.save_slack_ref(done, SlackMessageRef(channel="C9", ts="9.9"))
    await journal.record_automation_levels(
        {"checkout": AutomationLevel.NOTIFY, "search": AutomationLevel.AUTO}, by="rules a", at=NOW
    )
    await journal.record_automation_levels(
        {"checkout": AutomationLevel.APPROVE}, by="rules b", at=later
    )
    # The analysis of a record, twice edited (every edit is a row), with an empty list,
    # a line break and text that is not ASCII.
    await journal.edit_record_analysis(
        done, changes={"root_cause": "pool size 1\nin v1.4.1", "lessons": ("roll back first",)},
        by="alice", at=NOW,
    )  # fmt: skip
    await journal.edit_record_analysis(
        done, changes={"improvements": ("canary checks the pool", "Größe prüfen"),
                       "lessons": ()}, by="bob", at=later,
    )  # fmt: skip
    await journal.edit_record_analysis(
        rehearsal, changes={"improvements": ("", "b", "a")}, by="carol", at=later
    )
    await journal.check_writable()  # an old heartbeat: the clock is NOW, days before


async def everything(journal: Any) -> dict[str, Any]:
    """All a journal holds, as its ports show it."""
    from tests.contract.builders import NOW

    remediations = (await journal.list_remediations(limit=100)).items
    return {
        "signals": (await journal.list_signals(limit=100)).items,
        "cursors": (await journal.list_signals(limit=100)).item_cursors,
        "undecided": await journal.undecided_signals(limit=100),
        "remediations": [
            (await journal.get_remediation(r.id)).to_api() for r in remediations
        ],
        "runnable": [r.id for r in await journal.runnable_remediations(limit=100)],
        "claims": [r.id for r in await journal.unfinished_claims(holder="pod-1",
                                                                 stale_before=COPIED_AT)],
        "backlog": await journal.outbox_backlog(),
        "pending": await journal.pending(channel=CHANNEL, limit=100, holder="pod-1",
                                         at=NOW + timedelta(days=1), lease_seconds=30),
        "circuit": await journal.circuit(),
        "slack": await journal.slack_ref(remediations[-1].id),
        "levels": await journal.automation_levels(),
        "level history": await journal.automation_level_history(service="checkout"),
        "outcomes": await journal.service_outcomes(since=NOW - timedelta(days=30),
                                                   until=NOW + timedelta(days=1)),
        "analysis": [await journal.record_analysis(r.id) for r in remediations],
    }  # fmt: skip


async def test_a_journal_filled_through_the_ports_copies_to_the_same_journal(
    tmp_path: Path, target: SecretStr
) -> None:
    """The SQLite journal of this release, written through its roles, then read
    through the same roles on both sides of the copy."""
    from remediator.journal.sqlite import SqliteJournal
    from tests.contract.builders import Clock

    path = tmp_path / "now.db"
    sqlite = SqliteJournal(path=path, clock=Clock(), instance="pod-0")
    await sqlite.open()
    try:
        await fill_through_the_ports(sqlite)
        before = await everything(sqlite)
    finally:
        await sqlite.close()
    report = await copy(path, target)
    assert report.version == schema_version()
    postgres = PostgresJournal(dsn=target, instance="pod-1", pool_size=2)
    await postgres.open()
    try:
        after = await everything(postgres)
    finally:
        await postgres.close()
    assert after == before
    assert len(before["remediations"]) == 4 and before["claims"]
    assert len(before["level history"]) == 2 and before["outcomes"]
    assert report.counts["record_analysis"] == 3
    edited = [a for a in before["analysis"] if a is not None]
    assert sorted((a.edited_by, a.improvements) for a in edited) == [
        ("bob", ("canary checks the pool", "Größe prüfen")), ("carol", ("", "b", "a")),
    ]  # fmt: skip
