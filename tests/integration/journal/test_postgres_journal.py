"""What only the PostgreSQL journal has: migrations shared by replicas, a server to
lose and reconnect to, the intake lock that orders seqs, a DSN holding a password."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from pydantic import SecretStr

from remediator.domain.errors import PermanentError, TemporaryError
from remediator.domain.failpoints import Failpoints
from remediator.journal import journal_from_url
from remediator.journal.postgres import PostgresJournal
from remediator.journal.postgres import migrate as migrate_module
from remediator.journal.postgres.intake import INTAKE_LOCK
from remediator.journal.postgres.migrate import Migration, known_migrations
from tests.contract.builders import Clock, signal
from tests.pgdb import fresh_database
from tests.polling import eventually

pytestmark = pytest.mark.integration

PASSWORD = "remediator-test-password"  # tests/env/postgres.py


@pytest.fixture
async def dsn(postgres: Any) -> AsyncIterator[SecretStr]:
    async with fresh_database(postgres.endpoints["postgres_dsn"]) as fresh:
        yield fresh


@pytest.fixture
async def opened(dsn: SecretStr) -> AsyncIterator[Callable[..., Any]]:
    journals: list[PostgresJournal] = []

    async def open_journal(**options: Any) -> PostgresJournal:
        journal = PostgresJournal(dsn=dsn, pool_size=3, clock=Clock(), **options)
        await journal.open()
        journals.append(journal)
        return journal

    yield open_journal
    for journal in journals:
        await journal.close()


async def raw(dsn: SecretStr) -> asyncpg.Connection:
    return await asyncpg.connect(dsn.get_secret_value(), timeout=10)


async def backend_waiting_for_a_lock(conn: asyncpg.Connection, application: str) -> bool:
    waiting = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1"
        " AND wait_event_type = 'Lock'",
        application,
    )
    return bool(waiting)


# -- migrations -------------------------------------------------------------------------
async def test_replicas_starting_together_migrate_once(
    opened: Callable[..., Any], dsn: SecretStr
) -> None:
    await asyncio.gather(*(opened(instance=f"replica-{n}") for n in range(4)))
    conn = await raw(dsn)
    try:
        versions = [r["version"] for r in await conn.fetch("SELECT version FROM schema_version")]
    finally:
        await conn.close()
    assert versions == [m.version for m in known_migrations()]


async def test_a_schema_newer_than_this_build_is_refused(
    opened: Callable[..., Any], dsn: SecretStr
) -> None:
    first = await opened()
    await first.close()
    conn = await raw(dsn)
    try:
        await conn.execute("INSERT INTO schema_version (version, name) VALUES (999, 'future')")
    finally:
        await conn.close()
    journal = PostgresJournal(dsn=dsn)
    with pytest.raises(PermanentError, match="version 999, newer than this remediator knows"):
        await journal.open()
    assert not journal.alive()


async def test_a_failing_migration_leaves_nothing_behind(
    dsn: SecretStr, monkeypatch: pytest.MonkeyPatch, opened: Callable[..., Any]
) -> None:
    await opened()  # at the current version
    current = known_migrations()[-1].version
    broken = Migration(
        version=99,
        name="0099_broken.sql",
        sql="CREATE TABLE half_done (x int); SELECT no_such_function();",
    )
    monkeypatch.setattr(migrate_module, "known_migrations", lambda: [*known_migrations(), broken])
    with pytest.raises(PermanentError, match="no_such_function"):
        await PostgresJournal(dsn=dsn).open()
    conn = await raw(dsn)
    try:
        assert await conn.fetchval("SELECT to_regclass('half_done')") is None
        assert await conn.fetchval("SELECT max(version) FROM schema_version") == current
    finally:
        await conn.close()


async def test_plans_waiting_before_approval_requests_get_the_default_one(
    dsn: SecretStr, monkeypatch: pytest.MonkeyPatch, opened: Callable[..., Any]
) -> None:
    everything = known_migrations()
    monkeypatch.setattr(migrate_module, "known_migrations", lambda: everything[:1])
    first = await opened()  # schema 1: before approval requests
    await first.close()
    created = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
    conn = await raw(dsn)
    try:
        await conn.executemany(
            "INSERT INTO remediations (id, signal_id, service, status, created_at, updated_at,"
            " decision, explanation) VALUES ($1, 's', 'checkout', $2, $3, $3, $4::jsonb, '')",
            [
                ("rem_gate", "awaiting_approval", created,
                 '{"approvers": ["dba", "tech-lead"], "steps": []}'),
                ("rem_open", "awaiting_approval", created, '{"steps": []}'),
                ("rem_done", "succeeded", created, '{"approvers": ["dba"], "steps": []}'),
            ],
        )  # fmt: skip
    finally:
        await conn.close()
    monkeypatch.setattr(migrate_module, "known_migrations", lambda: everything)
    journal = await opened()
    gate = await journal.get_remediation("rem_gate")
    assert gate is not None and gate.approval is not None
    request = gate.approval.request
    assert [s.label for s in request.policy.seats] == ["dba", "tech-lead"]
    assert (request.requested_at, request.expires_at) == (created, created + timedelta(hours=4))
    assert request.response_due_at == created + timedelta(hours=1)
    opened_plan = await journal.get_remediation("rem_open")
    assert opened_plan is not None and opened_plan.approval is not None
    assert [s.label for s in opened_plan.approval.request.policy.seats] == ["any approver"]
    done = await journal.get_remediation("rem_done")
    assert done is not None and done.approval is None


# -- the DSN is a secret ------------------------------------------------------------------
async def test_the_password_is_in_no_repr_and_no_error(postgres: Any) -> None:
    admin = postgres.endpoints["postgres_dsn"]
    wrong = SecretStr(admin.replace(PASSWORD, "Wr0ng-Secret-Pw"))
    journal = journal_from_url(wrong)
    assert "Wr0ng-Secret-Pw" not in repr(journal)
    with pytest.raises(PermanentError) as caught:
        await journal.open()
    shown = str(caught.value)
    assert "password authentication failed" in shown
    assert "Wr0ng-Secret-Pw" not in shown and "***" in shown
    chained = caught.value.__cause__
    assert chained is None or "Wr0ng-Secret-Pw" not in str(chained)


async def test_an_unreachable_server_is_temporary(postgres: Any) -> None:
    admin = postgres.endpoints["postgres_dsn"]
    port = admin.rsplit(":", 1)[1].split("/")[0]
    nowhere = SecretStr(admin.replace(f":{port}/", ":1/"))
    journal = PostgresJournal(dsn=nowhere)
    with pytest.raises(TemporaryError) as caught:
        await journal.open()
    assert PASSWORD not in str(caught.value)
    assert not journal.alive()


# -- a server that goes away and comes back ----------------------------------------------------
async def test_connections_cut_by_the_server_are_replaced(
    opened: Callable[..., Any], dsn: SecretStr
) -> None:
    journal = await opened(instance="cut")
    await journal.record_signals([signal(1)])
    conn = await raw(dsn)
    try:
        cut = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = 'remediator cut'"
        )
        assert cut >= 1
    finally:
        await conn.close()
    assert journal.alive()  # an unreachable server is no reason to restart

    async def record() -> bool:
        try:
            (result,) = await journal.record_signals([signal(2)])
        except TemporaryError:
            return False
        return not result.duplicate

    await eventually(record, bool, timeout=30, what="intake after the connections were cut")
    assert len((await journal.list_signals(limit=10)).items) == 2


async def test_a_call_past_its_deadline_is_temporary_and_the_next_one_works(
    opened: Callable[..., Any], dsn: SecretStr
) -> None:
    journal = await opened(call_timeout_seconds=0.5)
    await journal.record_signals([signal(1)])
    batch = await journal.undecided_signals(limit=10)
    holder = await raw(dsn)
    try:
        tx = holder.transaction()
        await tx.start()
        await holder.execute("SELECT * FROM decision_cursor FOR UPDATE")
        with pytest.raises(TemporaryError, match=r"took longer than 0\.5s"):
            await journal.record_decisions([], cursor=batch.cursor, through_seq=batch.cursor)
        await tx.rollback()
    finally:
        await holder.close()
    assert await journal.record_decisions([], cursor=batch.cursor, through_seq=batch.cursor)


async def test_a_replica_frozen_in_a_transaction_cannot_hold_intake_for_long(
    opened: Callable[..., Any], dsn: SecretStr
) -> None:
    journal = await opened(call_timeout_seconds=1.0)
    # As a replica SIGSTOPped inside its intake transaction, with the journal's settings.
    frozen = await asyncpg.connect(
        dsn.get_secret_value(),
        server_settings=journal._db.server_settings(),
    )
    try:
        await frozen.execute("BEGIN")
        await frozen.execute("SELECT pg_advisory_xact_lock($1)", INTAKE_LOCK)

        async def record() -> bool:
            try:
                await journal.record_signals([signal(1)])
            except TemporaryError:
                return False
            return True

        await eventually(record, bool, timeout=30, what="intake past the frozen replica")
    finally:
        frozen.terminate()


async def test_the_journal_s_sessions_never_jit_compile(opened: Callable[..., Any]) -> None:
    """JIT on the engine's small queries cost more than the queries (docs/benchmarks.md)."""
    journal = await opened()

    async def setting(conn: asyncpg.Connection) -> str:
        return str(await conn.fetchval("SHOW jit"))

    assert await journal._db.read("show jit", setting) == "off"


# -- seqs become visible in order ----------------------------------------------------------------
async def test_a_signal_committing_late_is_not_skipped(
    opened: Callable[..., Any], dsn: SecretStr
) -> None:
    """Another replica's intake holds seq N uncommitted: this replica's signal (N+1)
    waits for it, so no decider can see N+1 and move the cursor past N."""
    journal = await opened(instance="second", call_timeout_seconds=30)
    other = await raw(dsn)
    watcher = await raw(dsn)
    try:
        await other.execute("BEGIN")
        await other.execute("SELECT pg_advisory_xact_lock($1)", INTAKE_LOCK)
        await other.execute(
            "INSERT INTO signals (id, key, source, kind, status, received_at, body)"
            " VALUES ('sig_first', 'first', 'manual', 'x', 'event', now(), '{\"labels\": {},"
            ' "annotations": {}, "raw": {}}\')'
        )
        recording = asyncio.create_task(journal.record_signals([signal(2)]))
        await eventually(
            lambda: backend_waiting_for_a_lock(watcher, "remediator second"), bool,
            timeout=30, what="the second intake waiting for the first",
        )  # fmt: skip
        assert not recording.done()
        assert (await journal.undecided_signals(limit=10)).signals == []
        await other.execute("COMMIT")
        await recording
    finally:
        await other.close()
        await watcher.close()
    batch = await journal.undecided_signals(limit=10)
    assert [s.signal.id for s in batch.signals] == ["sig_first", signal(2).id]


@contextlib.asynccontextmanager
async def the_next_commit(
    journal: PostgresJournal, dsn: SecretStr, instance: str
) -> AsyncIterator[None]:
    """Calls made inside go in one commit together: another session holds the intake
    lock while a first call's commit waits for it; on leaving, the lock is released and
    the first call completes."""
    blocker, watcher = await raw(dsn), await raw(dsn)
    try:
        await blocker.execute("BEGIN")
        await blocker.execute("SELECT pg_advisory_xact_lock($1)", INTAKE_LOCK)
        first = asyncio.create_task(journal.record_signals([signal(0)]))
        await eventually(
            lambda: backend_waiting_for_a_lock(watcher, f"remediator {instance}"), bool,
            timeout=30, what="the first commit waiting",
        )  # fmt: skip
        yield
        await asyncio.sleep(0)  # the calls made inside reach the writer's queue
        await blocker.execute("COMMIT")
        await first
    finally:
        await blocker.close()
        await watcher.close()


async def test_concurrent_calls_share_one_commit(
    opened: Callable[..., Any], dsn: SecretStr
) -> None:
    journal = await opened(instance="grouped", call_timeout_seconds=30)
    async with the_next_commit(journal, dsn, "grouped"):
        queued = [
            asyncio.create_task(journal.record_signals([signal(n), signal(n + 100)]))
            for n in range(1, 21)
        ]
    results = await asyncio.gather(*queued)
    assert journal.last_batch_size == 40
    assert all(not r.duplicate for batch in results for r in batch)


async def test_a_request_that_cannot_be_stored_fails_alone_in_a_shared_commit(
    opened: Callable[..., Any], dsn: SecretStr
) -> None:
    """A body the journal cannot encode (an integer past 64 bits) is refused for its
    request only: the others in the commit are stored, and intake goes on."""
    journal = await opened(instance="shared", call_timeout_seconds=30)
    async with the_next_commit(journal, dsn, "shared"):
        bad = asyncio.create_task(journal.record_signals([replace(signal(1), raw={"n": 2**70})]))
        good = asyncio.create_task(journal.record_signals([signal(2)]))
    with pytest.raises(PermanentError, match="journal intake"):
        await bad
    [stored] = await good
    assert not stored.duplicate
    assert journal.alive()
    [after] = await journal.record_signals([signal(3)])
    assert not after.duplicate
    ids = {s["id"] for s in (await journal.list_signals(limit=10)).items}
    assert ids == {signal(n).id for n in (0, 2, 3)}


# -- liveness -----------------------------------------------------------------------------------
async def test_a_dead_intake_writer_fails_every_call_and_is_not_alive(
    opened: Callable[..., Any],
) -> None:
    journal = await opened(failpoints=Failpoints.parse("journal.writer:doomed"))
    await journal.record_signals([signal(1)])  # another service: the point stays quiet
    assert journal.alive()
    with pytest.raises(TemporaryError, match="journal writer stopped"):
        await journal.record_signals([signal(2, service="doomed")])
    assert not journal.alive()
    with pytest.raises(TemporaryError, match="journal writer stopped"):
        await journal.record_signals([signal(3)])
    with pytest.raises(TemporaryError, match="journal writer stopped"):
        await journal.list_signals()
    with pytest.raises(TemporaryError):
        await journal.check_writable()


async def test_a_writer_stuck_in_one_batch_is_not_alive_until_it_moves(
    opened: Callable[..., Any], dsn: SecretStr
) -> None:
    now = [0.0]
    journal = await opened(instance="stuck", call_timeout_seconds=30, monotonic=lambda: now[0])
    blocker, watcher = await raw(dsn), await raw(dsn)
    try:
        await blocker.execute("BEGIN")
        await blocker.execute("SELECT pg_advisory_xact_lock($1)", INTAKE_LOCK)
        recording = asyncio.create_task(journal.record_signals([signal(1)]))
        await eventually(
            lambda: backend_waiting_for_a_lock(watcher, "remediator stuck"), bool,
            timeout=30, what="the writer waiting",
        )  # fmt: skip
        assert journal.alive()
        now[0] += 12 * 30 + 1
        assert not journal.alive()
        await blocker.execute("COMMIT")
        await recording
        assert journal.alive()
    finally:
        await blocker.close()
        await watcher.close()


# -- what PostgreSQL text cannot hold -------------------------------------------------------------
async def test_a_nul_in_a_signal_is_stored_as_a_replacement_character(
    opened: Callable[..., Any],
) -> None:
    journal = await opened()
    odd = replace(
        signal(1),
        kind="High\x00Errors",
        labels={"alertname": "High\x00Errors", "path": "a\\u0000b"},
        raw={"note": "x\x00y"},
    )
    (stored,) = await journal.record_signals([odd])
    assert not stored.duplicate
    (again,) = await journal.record_signals([odd])
    assert again.duplicate  # the id is the key's, as received
    back = await journal.get_signal(odd.id)
    assert back is not None
    assert back.kind == "High\ufffdErrors"
    assert back.labels == {"alertname": "High\ufffdErrors", "path": "a\\u0000b"}
    assert back.raw == {"note": "x\ufffdy"}
