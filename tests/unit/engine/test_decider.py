"""The decision engine over the real SQLite journal and the shipped rule pack."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from remediator.domain.approvals import ApprovalConfig
from remediator.domain.errors import PermanentError, TemporaryError
from remediator.domain.lifecycle import Remediation, RemediationStatus
from remediator.domain.plans import NoAction
from remediator.domain.record import status_note
from remediator.domain.record_build import record_from_journal
from remediator.domain.requests import RollbackRequest
from remediator.domain.rules import DeployRecord, RulePack, signal_from_cloudevent
from remediator.domain.signals import (
    DEFAULT_NAMESPACE_LABELS,
    DEFAULT_SERVICE_LABELS,
    Signal,
    Source,
    Status,
)
from remediator.engine.decider import DecisionEngine, mark_healthy
from remediator.ingress.alertmanager import parse_payload, to_signals
from remediator.journal.sqlite import SqliteJournal
from remediator.ports import (
    CircuitInputs,
    DecisionRecord,
    OutboxMessage,
    RemediationSummary,
    UndecidedBatch,
    newly_stored,
)
from remediator.rulefiles import load_rule_pack_from_path
from tests.polling import eventually
from tests.unit.journal_helpers import outbox_messages
from tests.unit.payloads import alert, payload

RULES = Path(__file__).resolve().parents[3] / "rules"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


class FakeFacts:
    """In-memory ServiceFacts (our own port): replicas per service."""

    def __init__(self, replicas: dict[str, tuple[int, int | None]]) -> None:
        self.replicas_by_service = replicas
        self.asked: list[str] = []

    async def replicas(self, *, service: str, namespace: str) -> tuple[int, int | None] | None:
        self.asked.append(service)
        return self.replicas_by_service.get(service)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(scope="module")
def pack() -> RulePack:
    return load_rule_pack_from_path(RULES)


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[SqliteJournal]:
    j = SqliteJournal(path=tmp_path / "journal.db")
    await j.open()
    yield j
    await j.close()


def engine_for(journal: SqliteJournal, pack: RulePack, *, clock: Clock, dry_run: bool = False,
               replicas: dict[str, tuple[int, int | None]] | None = None) -> DecisionEngine:  # fmt: skip
    return DecisionEngine(
        journal=journal,
        pack=pack,
        facts=FakeFacts(replicas if replicas is not None else {"checkout": (3, None)}),
        dry_run=dry_run,
        clock=clock,
        batch_size=200,
    )


async def journal_alerts(journal: SqliteJournal, alerts: list[dict[str, Any]]) -> None:
    signals = to_signals(
        parse_payload(orjson.dumps(payload(alerts))),
        received_at=NOW,
        service_labels=DEFAULT_SERVICE_LABELS,
        namespace_labels=DEFAULT_NAMESPACE_LABELS,
    )
    await journal.record_signals(signals)


async def run_planned(journal: SqliteJournal, *, to: RemediationStatus, at: datetime) -> None:
    """End every planned remediation ``to`` as an executor would: claimed, then finished."""
    for item in await journal.runnable_remediations(limit=1000):
        if item.status is RemediationStatus.PLANNED:
            claimed = await journal.claim_remediation(
                item.id, by="test-executor", at=at, to=RemediationStatus.RUNNING
            )
            assert claimed
            await journal.finish_remediation(
                item.id, holder="test-executor", status=to, reason=None, at=at
            )


async def drain(engine: DecisionEngine) -> int:
    total = 0
    while (n := await engine.run_once()) > 0:
        total += n
    return total


async def all_remediations(
    journal: SqliteJournal, **filters: RemediationStatus
) -> list[Remediation]:
    items: list[Remediation] = []
    cursor = None
    while True:
        page = await journal.list_remediations(limit=1000, cursor=cursor, **filters)
        items += page.items
        if page.next_cursor is None:
            return items
        cursor = page.next_cursor


def cpu(
    i: int, *, service: str = "checkout", namespace: str = "shop", status: str = "firing"
) -> dict[str, Any]:
    return alert(name="CPUSaturation", service=service, namespace=namespace, status=status,
                 fingerprint=f"cpu{i:05d}", extra_labels={"pod": f"{service}-{i}"})  # fmt: skip


async def test_storm_of_1000_alerts_yields_one_plan(journal: SqliteJournal, pack: RulePack) -> None:
    await journal_alerts(journal, [cpu(i) for i in range(1000)])
    engine = engine_for(journal, pack, clock=Clock(NOW))
    assert await drain(engine) == 1000
    remediations = await all_remediations(journal)
    planned = [r for r in remediations if r.status == "planned"]
    skipped = [r for r in remediations if r.status == "skipped"]
    assert len(planned) == 1
    assert planned[0].action == "scale_up"
    assert len(skipped) == 999
    assert {r.reason for r in skipped} == {"in_progress"}
    assert all("still open" in r.explanation for r in skipped)
    detail = await journal.get_remediation(planned[0].id)
    assert detail is not None
    steps = detail.decision["steps"]
    assert steps[0]["kind"] == "scale_deployment"
    assert steps[0]["params"]["replicas"] == 5  # 3 + step 2, within max 12


class CountingJournal(SqliteJournal):
    """The real journal, counting where the signals it hands the engine came from."""

    from_memory = 0
    read_back = 0

    async def undecided_signals(
        self, *, limit: int, known: Mapping[int, Signal] | None = None
    ) -> UndecidedBatch:
        batch = await super().undecided_signals(limit=limit, known=known)
        kept = sum(1 for s in batch.signals if known and known.get(s.seq) is s.signal)
        self.from_memory += kept
        self.read_back += len(batch.signals) - kept
        return batch


async def decisions_of(journal: SqliteJournal) -> list[tuple[Any, ...]]:
    def query(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
        return conn.execute(
            "SELECT signal_seq, signal_id, outcome, reason, rule, remediation_id, explanation"
            " FROM decisions ORDER BY signal_seq"
        ).fetchall()

    return await journal._db.read(query)


@pytest.mark.parametrize("keep", [10_000, 120])
async def test_signals_handed_over_at_intake_are_decided_as_if_read_back(
    tmp_path: Path, pack: RulePack, keep: int
) -> None:
    """Intake hands the engine what it journaled; deciding it needs no read of the
    bodies, and decides exactly as reading every signal back does. Past its limit the
    engine keeps no more, and those are read back."""
    storms = [[cpu(i) for i in range(n, n + 100)] for n in range(0, 300, 100)]
    kept, plain = CountingJournal(path=tmp_path / "kept.db"), SqliteJournal(path=tmp_path / "p.db")
    await kept.open()
    await plain.open()
    try:
        engine = DecisionEngine(journal=kept, pack=pack, facts=FakeFacts({"checkout": (3, None)}),
                                dry_run=False, clock=Clock(NOW), batch_size=200,
                                fresh_signals=keep)  # fmt: skip
        for alerts in storms:
            signals = to_signals(parse_payload(orjson.dumps(payload(alerts))), received_at=NOW,
                                 service_labels=DEFAULT_SERVICE_LABELS,
                                 namespace_labels=DEFAULT_NAMESPACE_LABELS)  # fmt: skip
            engine.journaled(newly_stored(signals, await kept.record_signals(signals)))
            await plain.record_signals(signals)
        assert await drain(engine) == 300
        assert await drain(engine_for(plain, pack, clock=Clock(NOW))) == 300
        assert (kept.from_memory, kept.read_back) == (min(keep, 300), 300 - min(keep, 300))
        assert await decisions_of(kept) == await decisions_of(plain)
        assert engine._fresh == {}  # nothing kept once decided
    finally:
        await kept.close()
        await plain.close()


async def test_hand_offs_out_of_seq_order_are_all_let_go_once_decided(
    journal: SqliteJournal, pack: RulePack
) -> None:
    """Concurrent webhooks hand over in the order their coroutines resume, not in seq
    order; what was decided leaves the engine's memory all the same."""
    engine = DecisionEngine(journal=journal, pack=pack, facts=FakeFacts({"checkout": (3, None)}),
                            dry_run=False, clock=Clock(NOW), batch_size=3)  # fmt: skip
    handed = []
    for alerts in ([cpu(1), cpu(2)], [cpu(3), cpu(4)]):
        signals = to_signals(parse_payload(orjson.dumps(payload(alerts))), received_at=NOW,
                             service_labels=DEFAULT_SERVICE_LABELS,
                             namespace_labels=DEFAULT_NAMESPACE_LABELS)  # fmt: skip
        handed.append(newly_stored(signals, await journal.record_signals(signals)))
    first, second = handed
    engine.journaled(second)
    engine.journaled(first)
    assert await engine.run_once() == 3
    assert set(engine._fresh) <= {second[1].seq, *(s.seq for s in first)}  # behind the 4th
    assert await engine.run_once() == 1
    assert engine._fresh == {}


async def test_each_signal_is_decided_once_across_restarts(
    journal: SqliteJournal, pack: RulePack
) -> None:
    await journal_alerts(journal, [cpu(i) for i in range(10)])
    assert await drain(engine_for(journal, pack, clock=Clock(NOW))) == 10
    # A new engine (a restart) starts at the cursor: nothing is decided again.
    assert await drain(engine_for(journal, pack, clock=Clock(NOW))) == 0
    await journal_alerts(journal, [cpu(i) for i in range(10, 15)])
    assert await drain(engine_for(journal, pack, clock=Clock(NOW))) == 5
    assert len(await all_remediations(journal)) == 15


@pytest.mark.parametrize(
    ("alerts", "reason"),
    [
        ([cpu(1, status="resolved")], "resolved"),
        ([alert(name="Watchdog", service="checkout", fingerprint="w")], "no_rule"),
        ([alert(name="CPUSaturation", service=None, fingerprint="u")], "unroutable"),
        # Outside the catalog, and no rule would act on it: a decision, no remediation.
        ([alert(name="Watchdog", service="unknown-svc", fingerprint="x")], "not_in_catalog"),
    ],
)
async def test_decisions_without_a_remediation_are_not_listed(
    journal: SqliteJournal, pack: RulePack, alerts: list[dict[str, Any]], reason: str
) -> None:
    await journal_alerts(journal, alerts)
    assert await drain(engine_for(journal, pack, clock=Clock(NOW))) == 1
    assert await all_remediations(journal) == []
    # The decision itself is journaled with its explanation.
    [(_, outcome, why, explanation)] = await decisions_table(journal)
    assert (outcome, why) == ("no_action", reason)
    assert explanation


async def test_a_signal_outside_the_catalog_that_a_rule_matches_is_listed_not_acted_on(
    journal: SqliteJournal, pack: RulePack
) -> None:
    facts = FakeFacts({"unknown-svc": (3, None), "checkout": (3, None)})
    await journal_alerts(journal, [
        alert(name="CPUSaturation", service="unknown-svc", fingerprint="x"),
        alert(name="CPUSaturation", service="checkout", namespace="kube-system", fingerprint="y"),
    ])  # fmt: skip
    engine = DecisionEngine(journal=journal, pack=pack, facts=facts, dry_run=False,
                            clock=Clock(NOW), notice_channels=("slack",))  # fmt: skip
    assert await drain(engine) == 2
    rems = await all_remediations(journal)
    assert sorted((r.service, r.namespace, r.status, r.reason) for r in rems) == [
        ("checkout", "kube-system", "skipped", "not_in_catalog"),
        ("unknown-svc", "shop", "skipped", "not_in_catalog"),
    ]
    assert all(r.rule == "cpu-saturation-scale-or-rollback" for r in rems)
    # Nothing about a forged target is read, and nobody is paged for it.
    assert facts.asked == []
    assert await outbox_messages(journal, "slack", limit=10) == []


class HistoryCountingJournal(SqliteJournal):
    """The SQLite journal, noting each service whose remediation history is read."""

    def __init__(self, path: Path) -> None:
        super().__init__(path=path)
        self.histories_read: list[str] = []

    async def remediation_history(
        self, *, service: str, since: datetime
    ) -> list[RemediationSummary]:
        self.histories_read.append(service)
        return await super().remediation_history(service=service, since=since)


async def test_signals_decided_before_any_state_read_no_history(tmp_path: Path) -> None:
    journal = HistoryCountingJournal(tmp_path / "journal.db")
    await journal.open()
    try:
        await journal_alerts(journal, [
            cpu(1, status="resolved"),  # resolved alerts never act
            cpu(2, service="unknown-svc"),  # outside the catalog
            cpu(3, namespace="kube-system"),  # the catalog's service, somewhere else
            alert(name="CPUSaturation", service=None, fingerprint="nowhere"),  # unroutable
            cpu(4),  # the one that weighs checkout's history
            cpu(5),  # the same batch: read once
        ])  # fmt: skip
        assert await drain(engine_for(journal, load_rule_pack_from_path(RULES),
                                      clock=Clock(NOW))) == 6  # fmt: skip
        reasons = [why for _, _, why, _ in await decisions_table(journal)]
        assert reasons == ["resolved", "not_in_catalog", "not_in_catalog", "unroutable",
                           None, "in_progress"]  # fmt: skip
        assert journal.histories_read == ["checkout"]
    finally:
        await journal.close()


async def test_unknown_replicas_skip_scale_up_as_not_applicable(
    journal: SqliteJournal, pack: RulePack
) -> None:
    await journal_alerts(journal, [cpu(1)])
    await drain(engine_for(journal, pack, clock=Clock(NOW), replicas={}))
    [rem] = await all_remediations(journal)
    assert (rem.status, rem.reason) == ("skipped", "not_applicable")


async def test_dry_run_records_the_plan_and_changes_nothing_else(
    journal: SqliteJournal, pack: RulePack
) -> None:
    await journal_alerts(journal, [cpu(i) for i in range(3)])
    await drain(engine_for(journal, pack, clock=Clock(NOW), dry_run=True))
    remediations = await all_remediations(journal)
    statuses = sorted((r.status, r.reason) for r in remediations)
    # The first is recorded as a dry run; the next ones hit its cooldown.
    assert statuses == [("dry-run", "dry_run"), ("skipped", "cooldown"), ("skipped", "cooldown")]
    dry = next(r for r in remediations if r.status == "dry-run")
    detail = await journal.get_remediation(dry.id)
    assert detail is not None and detail.decision["plan"]["dry_run"] is True


async def test_cooldown_after_an_earlier_plan_then_allowed_once_it_passes(
    journal: SqliteJournal, pack: RulePack
) -> None:
    clock = Clock(NOW)
    await journal_alerts(journal, [cpu(1)])
    await drain(engine_for(journal, pack, clock=clock))
    await run_planned(journal, to=RemediationStatus.SUCCEEDED, at=NOW)
    clock.now = NOW + timedelta(minutes=10)
    await journal_alerts(journal, [cpu(2)])
    await drain(engine_for(journal, pack, clock=clock))
    clock.now = NOW + timedelta(minutes=45)
    await journal_alerts(journal, [cpu(3)])
    await drain(engine_for(journal, pack, clock=clock))
    statuses = [(r.status, r.reason) for r in reversed(await all_remediations(journal))]
    assert statuses == [("succeeded", None), ("skipped", "cooldown"), ("planned", None)]


async def test_circuit_breaker_opens_after_too_many_actions_and_resets(
    journal: SqliteJournal, pack: RulePack
) -> None:
    breaker = pack.defaults.circuit_breaker.model_copy(update={"max_actions": 5})
    pack = pack.model_copy(
        update={"defaults": pack.defaults.model_copy(update={"circuit_breaker": breaker})}
    )
    services = [s for s, spec in pack.services.items() if spec.scale is not None]
    replicas = {s: (1, None) for s in services}
    clock = Clock(NOW)
    limit = breaker.max_actions
    # One alert per service per round; every plan is then marked succeeded so the
    # next round is not "in progress", and the clock moves past the cooldown.
    for round_no in range(limit // len(services) + 2):
        await journal_alerts(
            journal,
            [
                cpu(round_no * 100 + i, service=s, namespace=pack.services[s].namespace)
                for i, s in enumerate(services)
            ],
        )
        await drain(engine_for(journal, pack, clock=clock, replicas=replicas))
        await run_planned(journal, to=RemediationStatus.SUCCEEDED, at=clock.now)
        clock.now += timedelta(minutes=31)
        if (await journal.circuit()).open:
            break
    circuit = await journal.circuit()
    assert circuit.open
    assert circuit.reason is not None and "5 automated actions" in circuit.reason
    planned_or_done = [r for r in await all_remediations(journal) if r.reason is None]
    assert len(planned_or_done) == 5  # the breaker stopped the sixth
    await journal_alerts(
        journal, [cpu(9999, service=services[0], namespace=pack.services[services[0]].namespace)]
    )
    await drain(engine_for(journal, pack, clock=clock, replicas=replicas))
    newest = (await all_remediations(journal))[0]
    assert (newest.status, newest.reason) == ("skipped", "circuit_open")
    await journal.set_circuit(open=False, reason=None, at=clock.now)
    clock.now += timedelta(minutes=31)
    await journal_alerts(
        journal, [cpu(9998, service=services[1], namespace=pack.services[services[1]].namespace)]
    )
    await drain(engine_for(journal, pack, clock=clock, replicas=replicas))
    newest = (await all_remediations(journal))[0]
    assert newest.status == "planned"


def deploy_event(n: int, *, at: datetime, service: str = "checkout") -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"deploy-{service}-{n}",
        "source": "/cd/pipeline",
        "type": "io.remediator.deployment.succeeded",
        "time": at.isoformat(),
        "data": {"service": service, "namespace": "shop", "version": f"v1.{n}.0",
                 "revision": str(n), "previous_revision": str(n - 1)},
    }  # fmt: skip


async def journal_events(journal: SqliteJournal, events: list[dict[str, Any]]) -> None:
    await journal.record_signals([signal_from_cloudevent(e, received_at=NOW) for e in events])


async def test_alert_after_a_deploy_rolls_back_to_the_last_healthy_revision(
    journal: SqliteJournal, pack: RulePack
) -> None:
    await journal_events(
        journal,
        [
            deploy_event(1, at=NOW - timedelta(days=1)),
            deploy_event(2, at=NOW - timedelta(minutes=8)),
        ],
    )
    await journal_alerts(journal, [alert(name="PodNotReady", fingerprint="pnr",
                                         starts_at=(NOW - timedelta(minutes=5)).isoformat())])  # fmt: skip
    engine = DecisionEngine(journal=journal, pack=pack, facts=FakeFacts({}), dry_run=False,
                            clock=Clock(NOW), outcome_channel="kafka:remediator.outcomes")  # fmt: skip
    await drain(engine)
    [rem] = await all_remediations(journal)
    assert (rem.status, rem.action) == ("planned", "rollback")
    detail = await journal.get_remediation(rem.id)
    assert detail is not None
    undo = detail.decision["steps"][0]
    assert undo["kind"] == "rollout_undo"
    assert undo["params"]["to_revision"] in ("1", 1)
    # The outcome event sits in the outbox, written with the decision.
    [pending] = await outbox_messages(journal, "kafka:remediator.outcomes", limit=10)
    assert pending.message.payload["type"] == "io.remediator.remediation.planned"
    assert pending.message.payload["data"]["remediation_id"] == rem.id
    assert pending.message.key == "checkout"


async def test_a_deploy_followed_by_alerts_is_not_a_rollback_target(
    journal: SqliteJournal, pack: RulePack
) -> None:
    # v1 drew an error-rate alert before v2 replaced it: not known-good.
    await journal_events(journal, [deploy_event(1, at=NOW - timedelta(days=1))])
    await journal_alerts(journal, [alert(name="HighErrorRate", fingerprint="old",
                                         starts_at=(NOW - timedelta(hours=20)).isoformat())])  # fmt: skip
    await journal_events(journal, [deploy_event(2, at=NOW - timedelta(minutes=8))])
    await journal_alerts(journal, [alert(name="PodNotReady", fingerprint="pnr",
                                         starts_at=(NOW - timedelta(minutes=5)).isoformat())])  # fmt: skip
    await drain(engine_for(journal, pack, clock=Clock(NOW)))
    reasons = {r.reason for r in await all_remediations(journal)}
    assert reasons == {"outside_rollback_window"}


def test_mark_healthy_rules() -> None:
    d1 = DeployRecord(revision="1", finished_at=NOW - timedelta(hours=3))
    d2 = DeployRecord(revision="2", finished_at=NOW - timedelta(hours=2))
    d3 = DeployRecord(revision="3", finished_at=NOW - timedelta(hours=1))
    marked = mark_healthy([d3, d1, d2], alerts_between=[NOW - timedelta(minutes=90)])
    assert [(d.revision, d.healthy) for d in marked] == [("1", True), ("2", False), ("3", None)]
    assert mark_healthy([], alerts_between=[]) == ()


# --- no single signal or fault stops deciding ------------------------------------------


def firing(
    name: str, *, service: str, namespace: str, fingerprint: str, starts_at: datetime
) -> Signal:
    """A journaled alert as the engine reads it, built without the HTTP intake's checks:
    the engine must cope with whatever was journaled."""
    return Signal(
        key=f"am\x1ftest\x1f{fingerprint}\x1f{starts_at.isoformat()}\x1ffiring",
        source=Source.ALERTMANAGER,
        kind=name,
        status=Status.FIRING,
        service=service,
        namespace=namespace,
        labels={"alertname": name, "service": service, "namespace": namespace},
        annotations={},
        starts_at=starts_at,
        ends_at=None,
        received_at=NOW,
    )


def cpu_signal(fingerprint: str, *, service: str = "checkout", namespace: str = "shop") -> Signal:
    return firing("CPUSaturation", service=service, namespace=namespace,
                  fingerprint=fingerprint, starts_at=NOW - timedelta(minutes=5))  # fmt: skip


async def decisions_table(journal: SqliteJournal) -> list[tuple[str, str, str | None, str]]:
    """(signal id, outcome, reason, explanation) in journal order."""
    rows = await journal.database.read(
        lambda conn: conn.execute(
            "SELECT signal_id, outcome, reason, explanation FROM decisions ORDER BY signal_seq"
        ).fetchall()
    )
    return [tuple(row) for row in rows]


def remediation_of(rems: list[Remediation], signal: Signal) -> Remediation:
    [rem] = [r for r in rems if r.signal_id == signal.id]
    return rem


@pytest.mark.parametrize(
    "starts_at",
    [datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)],
    ids=["year-1", "year-9999"],
)
async def test_an_alert_from_the_edge_of_time_after_a_deploy_is_decided(
    journal: SqliteJournal, pack: RulePack, starts_at: datetime
) -> None:
    # Issue 11, item 1: this raised OverflowError in the deploy-window arithmetic.
    await journal_events(journal, [deploy_event(1, at=NOW - timedelta(days=1))])
    edge = firing("CPUSaturation", service="checkout", namespace="shop", fingerprint="edge",
                  starts_at=starts_at)  # fmt: skip
    await journal.record_signals([edge])
    assert await drain(engine_for(journal, pack, clock=Clock(NOW))) == 2
    # No deploy finished in the 30 minutes before it "started": load, so scale up.
    rem = remediation_of(await all_remediations(journal), edge)
    assert (rem.status, rem.action) == ("planned", "scale_up")


def with_broken_catalog(pack: RulePack, service: str) -> RulePack:
    """A catalog entry decide() cannot compute with (as if validation had let it pass)."""
    spec = pack.services[service]
    assert spec.scale is not None
    broken = spec.model_copy(update={"scale": spec.scale.model_copy(update={"step": None})})
    return pack.model_copy(update={"services": {**pack.services, service: broken}})


async def test_a_poison_signal_is_journaled_and_the_root_task_decides_on(
    journal: SqliteJournal, pack: RulePack, caplog: pytest.LogCaptureFixture
) -> None:
    good_before = cpu_signal("good-1")
    poison = [cpu_signal(f"poison-{i}", service="payments", namespace="payments") for i in (1, 2)]
    good_after = cpu_signal("good-2", service="web", namespace="web")
    await journal.record_signals([good_before, *poison, good_after])
    internal_errors: list[str] = []
    reasons: list[str] = []
    engine = DecisionEngine(
        journal=journal,
        pack=with_broken_catalog(pack, "payments"),
        facts=FakeFacts({"checkout": (3, None), "payments": (2, None), "web": (2, None)}),
        dry_run=False,
        clock=Clock(NOW),
        notice_channels=("slack",),
        on_decision=lambda d: reasons.append(d.reason.value if isinstance(d, NoAction) else ""),
        on_internal_error=internal_errors.append,
    )
    root = asyncio.create_task(engine.run())
    try:
        await eventually(lambda: journal.undecided_signals(limit=10), lambda left: not left.signals,
                         timeout=10, what="every signal decided")  # fmt: skip
        assert not root.done(), "the root task ended"
    finally:
        root.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await root

    table = await decisions_table(journal)
    assert [row[0] for row in table] == [good_before.id, poison[0].id, poison[1].id, good_after.id]
    assert [row[1:3] for row in table] == [
        ("plan", None), ("no_action", "internal_error"), ("no_action", "internal_error"),
        ("plan", None),
    ]  # fmt: skip
    assert "TypeError" in table[1][3]
    assert reasons == ["", "internal_error", "internal_error", ""]
    assert internal_errors == ["TypeError", "TypeError"]
    # People hear of it: a skipped remediation with the reason, and its notice.
    rems = await all_remediations(journal)
    rem = remediation_of(rems, poison[0])
    assert (rem.status, rem.reason) == ("skipped", "internal_error")
    notices = await outbox_messages(journal, "slack", limit=50)
    assert rem.id in {n.message.payload["remediation_id"] for n in notices}
    detail = await journal.get_remediation(rem.id)
    assert detail is not None
    record = record_from_journal(detail, poison[0])
    assert (status_note(record) or "").startswith("Not decided")
    # Logged at ERROR once per signal with its id; one traceback per kind of error.
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [p.id in r.getMessage() for r, p in zip(errors, poison, strict=True)] == [True, True]
    assert [r.exc_info is not None for r in errors] == [True, False]
    # A restart decides nothing again: the cursor moved past the poison.
    assert await engine_for(journal, pack, clock=Clock(NOW)).run_once() == 0


class RefusingJournal(SqliteJournal):
    """Refuses (not temporarily) any decision of one signal that opens a remediation."""

    def __init__(self, *, path: Path, poison_id: str) -> None:
        super().__init__(path=path)
        self.poison_id = poison_id
        self.refused = 0

    async def record_decisions(
        self,
        decisions: Sequence[DecisionRecord],
        *,
        cursor: int,
        through_seq: int,
        outbox: Sequence[OutboxMessage] = (),
    ) -> bool:
        if any(d.signal_id == self.poison_id and d.remediation for d in decisions):
            self.refused += 1
            raise ValueError("cannot store this remediation")
        return await super().record_decisions(
            decisions, cursor=cursor, through_seq=through_seq, outbox=outbox
        )


async def test_a_batch_the_journal_refuses_is_decided_one_signal_at_a_time(
    tmp_path: Path, pack: RulePack
) -> None:
    signals = [cpu_signal(f"cpu-{i}") for i in range(3)]
    journal = RefusingJournal(path=tmp_path / "journal.db", poison_id=signals[0].id)
    await journal.open()
    try:
        await journal.record_signals(signals)
        assert await engine_for(journal, pack, clock=Clock(NOW)).run_once() == 3
        # The batch, the poison's plan alone, and its internal_error with a remediation.
        assert journal.refused == 3
        table = await decisions_table(journal)
        assert [row[1:3] for row in table] == [
            ("no_action", "internal_error"), ("plan", None), ("no_action", "in_progress"),
        ]  # fmt: skip
        assert "ValueError: cannot store this remediation" in table[0][3]
        # The plan that was never written holds nothing up: the next alert plans.
        rems = await all_remediations(journal)
        assert [r.signal_id for r in rems if r.status == "planned"] == [signals[1].id]
        assert await engine_for(journal, pack, clock=Clock(NOW)).run_once() == 0
    finally:
        await journal.close()


class FailingFacts:
    """ServiceFacts (our port) whose cluster answers with ``error`` for every read."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.asked = 0

    async def replicas(self, *, service: str, namespace: str) -> tuple[int, int | None] | None:
        self.asked += 1
        raise self.error


@pytest.mark.parametrize(
    "error",
    [
        PermanentError("deployments.apps is forbidden (403)"),
        TemporaryError("apiserver unavailable"),
        RuntimeError("bug in the facts"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_unreadable_facts_leave_replicas_unknown_and_rollbacks_still_plan(
    journal: SqliteJournal, pack: RulePack, caplog: pytest.LogCaptureFixture, error: Exception
) -> None:
    await journal_events(
        journal,
        [deploy_event(1, at=NOW - timedelta(days=1)),
         deploy_event(2, at=NOW - timedelta(minutes=8))],
    )  # fmt: skip
    rollback = firing("PodNotReady", service="checkout", namespace="shop", fingerprint="pnr",
                      starts_at=NOW - timedelta(minutes=5))  # fmt: skip
    scale = [cpu_signal(f"web-{i}", service="web", namespace="web") for i in range(2)]
    await journal.record_signals([rollback, *scale])
    failed_services: list[str] = []
    facts = FailingFacts(error)
    engine = DecisionEngine(journal=journal, pack=pack, facts=facts, dry_run=False,
                            clock=Clock(NOW), notice_channels=("slack",),
                            on_facts_error=failed_services.append)  # fmt: skip
    assert await drain(engine) == 5
    rems = await all_remediations(journal)
    planned = remediation_of(rems, rollback)
    assert (planned.status, planned.action) == ("planned", "rollback")
    skipped = remediation_of(rems, scale[0])
    assert (skipped.status, skipped.reason) == ("skipped", "not_applicable")
    assert str(error) in skipped.explanation
    notices = {
        n.message.payload["remediation_id"]
        for n in await outbox_messages(journal, "slack", limit=50)
    }
    assert skipped.id in notices  # people hear that a scale-up could not be planned
    # Read once per service per batch, and reported as often; only where a scale-up could
    # follow: the rollback's service was never asked.
    assert facts.asked == 1
    assert failed_services == ["web"]
    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and "replicas" in r.getMessage()
    ]
    assert len(warnings) == 1


class FlakyJournal(SqliteJournal):
    """Fails the first reads of the circuit's inputs with ``errors``, one each."""

    def __init__(self, *, path: Path, errors: list[Exception]) -> None:
        super().__init__(path=path)
        self.errors = errors

    async def circuit_inputs(self) -> CircuitInputs:
        if self.errors:
            raise self.errors.pop(0)
        return await super().circuit_inputs()


async def test_the_root_task_waits_out_an_unavailable_journal_and_survives_anything_else(
    tmp_path: Path, pack: RulePack
) -> None:
    journal = FlakyJournal(
        path=tmp_path / "journal.db",
        errors=[TemporaryError("disk busy", delay=7.0), RuntimeError("bug"), RuntimeError("bug")],
    )
    await journal.open()
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await asyncio.sleep(0)

    internal_errors: list[str] = []
    engine = DecisionEngine(journal=journal, pack=pack, facts=FakeFacts({"checkout": (3, None)}),
                            dry_run=False, clock=Clock(NOW), sleep=sleep,
                            on_internal_error=internal_errors.append)  # fmt: skip
    root = asyncio.create_task(engine.run())
    try:
        await journal.record_signals([cpu_signal("cpu")])
        engine.wake()
        await eventually(lambda: journal.undecided_signals(limit=10), lambda left: not left.signals,
                         timeout=10, what="the signal decided")  # fmt: skip
        assert not root.done()
    finally:
        root.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await root
        await journal.close()
    # The journal's own delay, then backoff for what it did not classify.
    assert slept == [7.0, 1.0, 2.0]
    assert internal_errors == ["RuntimeError", "RuntimeError"]


async def test_a_failing_deploy_hook_never_stops_deciding(
    journal: SqliteJournal, pack: RulePack
) -> None:
    async def on_deploy(signal: Signal) -> None:
        raise RuntimeError("snapshot exploded")

    internal_errors: list[str] = []
    engine = DecisionEngine(journal=journal, pack=pack, facts=FakeFacts({"checkout": (3, None)}),
                            dry_run=False, clock=Clock(NOW), on_deploy=on_deploy,
                            on_internal_error=internal_errors.append)  # fmt: skip
    await journal_events(journal, [deploy_event(1, at=NOW - timedelta(days=1))])
    assert await engine.run_once() == 1
    await journal.record_signals([cpu_signal("after")])
    assert await engine.run_once() == 1
    assert internal_errors == ["RuntimeError"]
    assert [row[1] for row in await decisions_table(journal)] == ["no_action", "plan"]


async def test_the_history_window_follows_the_injected_clock(
    journal: SqliteJournal, pack: RulePack
) -> None:
    clock = Clock(NOW)
    await journal.record_signals([cpu_signal("first")])
    await drain(engine_for(journal, pack, clock=clock))  # a plan, still open
    clock.now = NOW + timedelta(days=1)
    await journal.record_signals([cpu_signal("a-day-later")])
    await drain(engine_for(journal, pack, clock=clock))
    clock.now = NOW + timedelta(days=3)
    await journal.record_signals([cpu_signal("three-days-later")])
    await drain(engine_for(journal, pack, clock=clock))
    # A plan older than HISTORY_WINDOW (by the engine's clock) no longer holds others up.
    assert [row[1:3] for row in await decisions_table(journal)] == [
        ("plan", None), ("no_action", "in_progress"), ("plan", None),
    ]  # fmt: skip


async def test_two_engines_on_one_journal_decide_each_signal_once(
    journal: SqliteJournal, pack: RulePack, caplog: pytest.LogCaptureFixture
) -> None:
    # Two replicas' engines read the same undecided batch; the cursor's compare-and-set
    # lets one write it, and the other reads again from where that one got to.
    await journal_alerts(journal, [cpu(i) for i in range(500)])
    engines = [engine_for(journal, pack, clock=Clock(NOW)) for _ in range(2)]
    with caplog.at_level(logging.DEBUG, logger="remediator.engine.decider"):
        counts = await asyncio.gather(*(drain(engine) for engine in engines))
    assert sum(counts) == 500
    assert any("another replica decided" in r.getMessage() for r in caplog.records)
    table = await decisions_table(journal)
    assert len(table) == len({row[0] for row in table}) == 500
    remediations = await all_remediations(journal)
    assert len(remediations) == 500
    assert [r.status for r in remediations].count(RemediationStatus.PLANNED) == 1


# -- rollback requests and approvals ---------------------------------------------------------


def rollback_request(n: int, **changes: Any) -> Signal:
    fields: dict[str, Any] = {"service": "checkout", "namespace": "shop",
                              "scenario": "data_consistency", "reason": "orders lost"}  # fmt: skip
    fields.update(changes)
    return RollbackRequest(**fields).signal(requester="rita", received_at=NOW,
                                            idempotency=f"request-{n}")  # fmt: skip


async def test_a_request_waits_for_its_scenarios_approvers_within_its_response_time(
    journal: SqliteJournal, pack: RulePack
) -> None:
    await journal_events(journal, [deploy_event(1, at=NOW - timedelta(days=1)),
                                   deploy_event(2, at=NOW - timedelta(hours=2))])  # fmt: skip
    await journal.record_signals([rollback_request(1, target="1")])
    engine = DecisionEngine(
        journal=journal, pack=pack, facts=FakeFacts({}), dry_run=False, clock=Clock(NOW),
        approvals=ApprovalConfig(expiry_factor=3),
    )  # fmt: skip
    await drain(engine)
    [rem] = await all_remediations(journal)
    assert (rem.status, rem.rule, rem.manual) == (
        "awaiting_approval", "manual-data-consistency", True,
    )  # fmt: skip
    detail = await journal.get_remediation(rem.id)
    assert detail is not None and detail.approval is not None
    request = detail.approval.request
    assert (request.requester, request.scenario, request.reason, request.target) == (
        "rita", "data_consistency", "orders lost", "1",
    )  # fmt: skip
    assert [seat.label for seat in request.policy.seats] == ["dba", "tech-lead"]
    assert request.response_due_at == NOW + timedelta(minutes=15)  # the rule's timeout
    assert request.expires_at == NOW + timedelta(minutes=45)
    assert not request.policy.emergency
    assert detail.decision is not None
    assert detail.decision["steps"][0]["params"]["to_revision"] == 1


async def test_an_emergency_request_needs_one_emergency_approver(
    journal: SqliteJournal, pack: RulePack
) -> None:
    await journal_events(journal, [deploy_event(1, at=NOW - timedelta(days=1)),
                                   deploy_event(2, at=NOW - timedelta(hours=2))])  # fmt: skip
    await journal.record_signals([rollback_request(1, emergency=True)])
    engine = DecisionEngine(
        journal=journal, pack=pack, facts=FakeFacts({}), dry_run=False, clock=Clock(NOW),
        approvals=ApprovalConfig(emergency_roles=("tech-lead", "ops-lead")),
    )  # fmt: skip
    await drain(engine)
    [rem] = await all_remediations(journal)
    detail = await journal.get_remediation(rem.id)
    assert detail is not None and detail.approval is not None
    policy = detail.approval.request.policy
    assert policy.emergency and [s.label for s in policy.seats] == ["tech-lead or ops-lead"]


async def test_automation_goes_on_while_a_request_waits(
    journal: SqliteJournal, pack: RulePack
) -> None:
    await journal_events(journal, [deploy_event(1, at=NOW - timedelta(days=1)),
                                   deploy_event(2, at=NOW - timedelta(minutes=8))])  # fmt: skip
    await journal.record_signals([rollback_request(1)])
    await journal_alerts(journal, [alert(name="PodNotReady", fingerprint="pnr",
                                         starts_at=(NOW - timedelta(minutes=5)).isoformat())])  # fmt: skip
    await drain(engine_for(journal, pack, clock=Clock(NOW)))
    statuses = sorted((r.rule, r.status) for r in await all_remediations(journal))
    assert statuses == [("manual-data-consistency", "awaiting_approval"),
                        ("pod-not-ready-rollback", "planned")]  # fmt: skip


class SlowCommitJournal(SqliteJournal):
    """The real journal, whose decision commits take ``commit_seconds`` of the clock."""

    def __init__(self, *, path: Path, clock: Clock, commit_seconds: float) -> None:
        super().__init__(path=path)
        self.clock = clock
        self.commit_seconds = commit_seconds

    async def record_decisions(
        self,
        decisions: Sequence[DecisionRecord],
        *,
        cursor: int,
        through_seq: int,
        outbox: Sequence[OutboxMessage] = (),
    ) -> bool:
        written = await super().record_decisions(
            decisions, cursor=cursor, through_seq=through_seq, outbox=outbox
        )
        self.clock.now += timedelta(seconds=self.commit_seconds)
        return written


async def test_decision_latency_runs_from_receipt_until_the_decision_is_journaled(
    tmp_path: Path, pack: RulePack
) -> None:
    clock = Clock(NOW + timedelta(seconds=3))  # the signals were received at NOW
    journal = SlowCommitJournal(path=tmp_path / "journal.db", clock=clock, commit_seconds=2)
    await journal.open()
    try:
        await journal_alerts(journal, [cpu(i) for i in range(5)])
        waited: list[float] = []
        engine = DecisionEngine(journal=journal, pack=pack, facts=FakeFacts({}), dry_run=True,
                                clock=clock, on_decision_latency=waited.append)  # fmt: skip
        assert await drain(engine) == 5
    finally:
        await journal.close()
    # 3 s waiting to be decided, 2 s for the commit: the commit counts.
    assert waited == [5.0] * 5


async def test_decision_latency_is_observed_once_per_signal_across_engines(
    journal: SqliteJournal, pack: RulePack
) -> None:
    await journal_alerts(journal, [cpu(i) for i in range(300)])
    waited: list[list[float]] = [[], []]
    engines = [
        DecisionEngine(
            journal=journal,
            pack=pack,
            facts=FakeFacts({}),
            dry_run=True,
            clock=Clock(NOW + timedelta(seconds=1)),
            batch_size=50,
            on_decision_latency=waited[n].append,
        )
        for n in range(2)
    ]
    counts = await asyncio.gather(*(drain(engine) for engine in engines))
    # Each engine observes what it journaled; a batch the other wrote first is not counted.
    assert [len(w) for w in waited] == counts
    assert sum(counts) == 300


async def test_a_decision_clock_behind_the_receiver_counts_as_no_wait(
    journal: SqliteJournal, pack: RulePack
) -> None:
    await journal_alerts(journal, [cpu(1)])  # received at NOW by a host whose clock runs fast
    waited: list[float] = []
    engine = DecisionEngine(journal=journal, pack=pack, facts=FakeFacts({}), dry_run=True,
                            clock=Clock(NOW - timedelta(seconds=4)),
                            on_decision_latency=waited.append)  # fmt: skip
    assert await drain(engine) == 1
    assert waited == [0.0]
