"""The decision engine over the real SQLite journal and the shipped rule pack."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from remediator.domain.rules import DeployRecord, RulePack, signal_from_cloudevent
from remediator.domain.signals import DEFAULT_NAMESPACE_LABELS, DEFAULT_SERVICE_LABELS
from remediator.engine.decider import DecisionEngine, mark_healthy
from remediator.ingress.alertmanager import parse_payload, to_signals
from remediator.journal.sqlite import SqliteJournal
from remediator.rulefiles import load_rule_pack_from_path
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


async def drain(engine: DecisionEngine) -> int:
    total = 0
    while (n := await engine.run_once()) > 0:
        total += n
    return total


async def all_remediations(journal: SqliteJournal, **filters: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
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
    planned = [r for r in remediations if r["status"] == "planned"]
    skipped = [r for r in remediations if r["status"] == "skipped"]
    assert len(planned) == 1
    assert planned[0]["action"] == "scale_up"
    assert len(skipped) == 999
    assert {r["reason"] for r in skipped} == {"in_progress"}
    assert all("still open" in r["explanation"] for r in skipped)
    detail = await journal.get_remediation(planned[0]["id"])
    assert detail is not None
    steps = detail["decision"]["steps"]
    assert steps[0]["kind"] == "scale_deployment"
    assert steps[0]["params"]["replicas"] == 5  # 3 + step 2, within max 12


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
        ([alert(name="CPUSaturation", service="unknown-svc", fingerprint="x")], "unroutable"),
    ],
)
async def test_decisions_without_a_remediation_are_not_listed(
    journal: SqliteJournal, pack: RulePack, alerts: list[dict[str, Any]], reason: str
) -> None:
    await journal_alerts(journal, alerts)
    assert await drain(engine_for(journal, pack, clock=Clock(NOW))) == 1
    assert await all_remediations(journal) == []
    # The decision itself is journaled with its explanation.
    db = journal._reader
    assert db is not None
    rows = db.execute("SELECT outcome, reason, explanation FROM decisions").fetchall()
    assert [(r[0], r[1]) for r in rows] == [("no_action", reason)]
    assert rows[0][2]


async def test_unknown_replicas_skip_scale_up_as_not_applicable(
    journal: SqliteJournal, pack: RulePack
) -> None:
    await journal_alerts(journal, [cpu(1)])
    await drain(engine_for(journal, pack, clock=Clock(NOW), replicas={}))
    [rem] = await all_remediations(journal)
    assert (rem["status"], rem["reason"]) == ("skipped", "not_applicable")


async def test_dry_run_records_the_plan_and_changes_nothing_else(
    journal: SqliteJournal, pack: RulePack
) -> None:
    await journal_alerts(journal, [cpu(i) for i in range(3)])
    await drain(engine_for(journal, pack, clock=Clock(NOW), dry_run=True))
    remediations = await all_remediations(journal)
    statuses = sorted((r["status"], r["reason"]) for r in remediations)
    # The first is recorded as a dry run; the next ones hit its cooldown.
    assert statuses == [("dry-run", "dry_run"), ("skipped", "cooldown"), ("skipped", "cooldown")]
    dry = next(r for r in remediations if r["status"] == "dry-run")
    detail = await journal.get_remediation(dry["id"])
    assert detail is not None and detail["decision"]["plan"]["dry_run"] is True


async def test_cooldown_after_an_earlier_plan_then_allowed_once_it_passes(
    journal: SqliteJournal, pack: RulePack
) -> None:
    clock = Clock(NOW)
    await journal_alerts(journal, [cpu(1)])
    await drain(engine_for(journal, pack, clock=clock))
    db = journal._reader
    assert db is not None
    # Until the executor lands, mark the plan finished by hand, as the executor will.
    await journal._write(lambda conn: conn.execute("UPDATE remediations SET status = 'succeeded'"))
    clock.now = NOW + timedelta(minutes=10)
    await journal_alerts(journal, [cpu(2)])
    await drain(engine_for(journal, pack, clock=clock))
    clock.now = NOW + timedelta(minutes=45)
    await journal_alerts(journal, [cpu(3)])
    await drain(engine_for(journal, pack, clock=clock))
    statuses = [(r["status"], r["reason"]) for r in reversed(await all_remediations(journal))]
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
        await journal._write(
            lambda conn: conn.execute(
                "UPDATE remediations SET status = 'succeeded' WHERE status = 'planned'"
            )
        )
        clock.now += timedelta(minutes=31)
        if (await journal.circuit()).open:
            break
    circuit = await journal.circuit()
    assert circuit.open
    assert circuit.reason is not None and "5 automated actions" in circuit.reason
    planned_or_done = [r for r in await all_remediations(journal) if r["reason"] is None]
    assert len(planned_or_done) == 5  # the breaker stopped the sixth
    await journal_alerts(
        journal, [cpu(9999, service=services[0], namespace=pack.services[services[0]].namespace)]
    )
    await drain(engine_for(journal, pack, clock=clock, replicas=replicas))
    newest = (await all_remediations(journal))[0]
    assert (newest["status"], newest["reason"]) == ("skipped", "circuit_open")
    await journal.set_circuit(open=False, reason=None, at=clock.now)
    clock.now += timedelta(minutes=31)
    await journal_alerts(
        journal, [cpu(9998, service=services[1], namespace=pack.services[services[1]].namespace)]
    )
    await drain(engine_for(journal, pack, clock=clock, replicas=replicas))
    newest = (await all_remediations(journal))[0]
    assert newest["status"] == "planned"


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
    assert (rem["status"], rem["action"]) == ("planned", "rollback")
    detail = await journal.get_remediation(rem["id"])
    assert detail is not None
    undo = detail["decision"]["steps"][0]
    assert undo["kind"] == "rollout_undo"
    assert undo["params"]["to_revision"] in ("1", 1)
    # The outcome event sits in the outbox, written with the decision.
    [pending] = await journal.pending(channel="kafka:remediator.outcomes", limit=10)
    assert pending.message.payload["type"] == "io.remediator.remediation.planned"
    assert pending.message.payload["data"]["remediation_id"] == rem["id"]
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
    reasons = {r["reason"] for r in await all_remediations(journal)}
    assert reasons == {"outside_rollback_window"}


def test_mark_healthy_rules() -> None:
    d1 = DeployRecord(revision="1", finished_at=NOW - timedelta(hours=3))
    d2 = DeployRecord(revision="2", finished_at=NOW - timedelta(hours=2))
    d3 = DeployRecord(revision="3", finished_at=NOW - timedelta(hours=1))
    marked = mark_healthy([d3, d1, d2], alerts_between=[NOW - timedelta(minutes=90)])
    assert [(d.revision, d.healthy) for d in marked] == [("1", True), ("2", False), ("3", None)]
    assert mark_healthy([], alerts_between=[]) == ()
