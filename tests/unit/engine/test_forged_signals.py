"""Forged input: signals trying to choose what remediator does, or where.

Each attempt of issue 12 (and more) goes through the real Alertmanager parsing, the
real SQLite journal, the decision engine and the shipped rule pack (rules/). None may
leave a plan that acts or waits for a click to act; each leaves its reason journaled.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

from remediator.domain.lifecycle import Remediation, RemediationStatus
from remediator.domain.rules import RulePack, load_rule_pack, signal_from_cloudevent
from remediator.domain.signals import (
    DEFAULT_NAMESPACE_LABELS,
    DEFAULT_SERVICE_LABELS,
    Signal,
    Source,
    Status,
)
from remediator.engine.decider import HISTORY_EVENTS, DecisionEngine
from remediator.ingress.alertmanager import parse_payload, to_signals
from remediator.journal.sqlite import SqliteJournal
from remediator.rulefiles import read_rule_files
from tests.unit.engine.test_decider import NOW, RULES, Clock, FakeFacts, all_remediations, drain
from tests.unit.journal_helpers import outbox_messages
from tests.unit.payloads import alert, payload

# A plan in these states runs, or runs once someone clicks approve.
ACTING = {
    RemediationStatus.PLANNED,
    RemediationStatus.RUNNING,
    RemediationStatus.AWAITING_APPROVAL,
}
TRUSTED_PRODUCER = "ci/deployer"


def am(
    name: str,
    *,
    fp: str,
    minutes_ago: float,
    service: str = "checkout",
    namespace: str = "shop",
    **labels: str,
) -> Signal:
    """One alert as the webhook would journal it, labels chosen by whoever sends it."""
    body = alert(
        name=name,
        service=service,
        namespace=namespace,
        fingerprint=fp,
        starts_at=(NOW - timedelta(minutes=minutes_ago)).isoformat(),
        extra_labels=labels,
    )
    [signal] = to_signals(
        parse_payload(orjson.dumps(payload([body]))),
        received_at=NOW,
        service_labels=DEFAULT_SERVICE_LABELS,
        namespace_labels=DEFAULT_NAMESPACE_LABELS,
    )
    return signal


def kafka(
    kind: str,
    *,
    event_id: str,
    minutes_ago: float,
    producer: str = TRUSTED_PRODUCER,
    service: str = "checkout",
    namespace: str = "shop",
    **data: str,
) -> Signal:
    event = {
        "specversion": "1.0",
        "id": event_id,
        "source": producer,
        "type": f"io.remediator.{kind}",
        "time": (NOW - timedelta(minutes=minutes_ago)).isoformat(),
        "data": {"service": service, "namespace": namespace, **data},
    }
    return signal_from_cloudevent(event, received_at=NOW)


def by_hand(
    kind: str, *, service: str = "checkout", namespace: str = "shop", **labels: str
) -> Signal:
    """A manual signal (a person, or whoever holds the credential to record one)."""
    return Signal(
        key=f"manual\x1f{kind}\x1f{service}\x1f{sorted(labels.items())}",
        source=Source.MANUAL,
        kind=kind,
        status=Status.EVENT,
        service=service,
        namespace=namespace,
        labels={"service": service, "namespace": namespace, **labels},
        annotations={},
        starts_at=NOW - timedelta(minutes=7),
        ends_at=None,
        received_at=NOW,
    )


def forged_deploys(service: str, namespace: str, revisions: tuple[str, str]) -> list[Signal]:
    """Alerts named like deploy events: an old "good" revision, a fresh "bad" one."""
    old, new = revisions
    return [
        am("deployment.succeeded", fp=f"{service}-d1", minutes_ago=24 * 60, service=service,
           namespace=namespace, revision=old, version=f"v-{old}", previous_revision="0"),
        am("deployment.succeeded", fp=f"{service}-d2", minutes_ago=8, service=service,
           namespace=namespace, revision=new, version=f"v-{new}", previous_revision=old),
    ]  # fmt: skip


@dataclass(frozen=True, slots=True)
class Attempt:
    name: str
    build: Callable[[], list[Signal]]  # journal order; the last one tries to act
    reason: str
    fragment: str  # of the journaled explanation
    pack: str = "shipped"  # or "ci-only": the shipped pack trusting one CloudEvents producer
    notify: bool = False  # people hear of it (as of every missing rollback target)


NO_HISTORY = "no deploy of '{}' is recorded, so no known revision to return to"

ATTEMPTS = [
    Attempt(
        "alerts named deployment.succeeded with revisions, then HighErrorRate",
        lambda: [
            *forged_deploys("checkout", "shop", ("1", "2")),
            am("HighErrorRate", fp="err", minutes_ago=5),
        ],
        "outside_rollback_window",
        NO_HISTORY.format("checkout"),
        notify=True,
    ),
    Attempt(
        "blue-green: a selector value from alert labels",
        lambda: [
            *forged_deploys("payments", "payments", ("attacker-pods", "green")),
            am("HighErrorRate", fp="err", minutes_ago=5, service="payments", namespace="payments"),
        ],
        "outside_rollback_window",
        NO_HISTORY.format("payments"),
        notify=True,
    ),
    Attempt(
        "helm: a release revision from alert labels",
        lambda: [
            *forged_deploys("web", "web", ("1", "7")),
            am("PodNotReady", fp="pnr", minutes_ago=5, service="web", namespace="web"),
        ],
        "outside_rollback_window",
        NO_HISTORY.format("web"),
        notify=True,
    ),
    Attempt(
        "an alert naming the target in its own labels",
        lambda: [
            am(
                "HighErrorRate",
                fp="err",
                minutes_ago=5,
                revision="1",
                to_revision="1",
                previous_revision="1",
                to_value="blue",
                version="v1.0.0",
            )
        ],
        "outside_rollback_window",
        NO_HISTORY.format("checkout"),
        notify=True,
    ),
    Attempt(
        "manual signals pretending to be deploys, then HighErrorRate",
        lambda: [
            by_hand("deployment.succeeded", revision="1"),
            by_hand("deployment.succeeded", revision="2"),
            am("HighErrorRate", fp="err", minutes_ago=5),
        ],
        "outside_rollback_window",
        NO_HISTORY.format("checkout"),
        notify=True,
    ),
    Attempt(
        "deploy events from a producer the pack does not trust",
        lambda: [
            kafka(
                "deployment.succeeded",
                event_id="m1",
                minutes_ago=24 * 60,
                producer="laptop/mallory",
                revision="1",
            ),
            kafka(
                "deployment.succeeded",
                event_id="m2",
                minutes_ago=8,
                producer="laptop/mallory",
                revision="2",
            ),
            am("HighErrorRate", fp="err", minutes_ago=5),
        ],
        "outside_rollback_window",
        NO_HISTORY.format("checkout"),
        pack="ci-only",
        notify=True,
    ),
    Attempt(
        "MigrationFailed with migration=001 while the latest recorded is 042",
        lambda: [
            kafka(
                "migration.applied",
                event_id="mig-42",
                minutes_ago=30,
                migration="042_add_index",
                version="v1.4.0",
            ),
            am("MigrationFailed", fp="mf", minutes_ago=5, migration="001"),
        ],
        "needs_human",
        "asks to revert migration '001', but the latest migration trusted history records "
        "for 'checkout' is '042_add_index'",
        notify=True,
    ),
    Attempt(
        "MigrationFailed with migration=001 and no trusted migration record",
        lambda: [am("MigrationFailed", fp="mf", minutes_ago=5, migration="001")],
        "needs_human",
        "no trusted source (kafka) recorded a migration of 'checkout'",
        notify=True,
    ),
    Attempt(
        "an alert named migration.failed as history, then MigrationFailed",
        lambda: [
            am("migration.failed", fp="fake-mig", minutes_ago=10, migration="001"),
            am("MigrationFailed", fp="mf", minutes_ago=5),
        ],
        "needs_human",
        "asks to revert a migration, but no trusted source (kafka) recorded",
        notify=True,
    ),
    Attempt(
        "a migration.failed event from an untrusted producer naming 001",
        lambda: [
            kafka(
                "migration.applied", event_id="mig-42", minutes_ago=30, migration="042_add_index"
            ),
            kafka(
                "migration.failed",
                event_id="evil",
                minutes_ago=5,
                producer="laptop/mallory",
                migration="001",
            ),
        ],
        "needs_human",
        "asks to revert migration '001', but the latest",
        pack="ci-only",
        notify=True,
    ),
    Attempt(
        "a service not in the catalog",
        lambda: [am("HighErrorRate", fp="err", minutes_ago=5, service="cart")],
        "not_in_catalog",
        "service 'cart' is not in the catalog",
    ),
    Attempt(
        "a catalog service with another namespace label",
        lambda: [am("CPUSaturation", fp="cpu", minutes_ago=5, namespace="payments")],
        "not_in_catalog",
        "namespace 'payments' is not where the catalog places 'checkout' ('shop')",
    ),
    Attempt(
        "a kube-system service",
        lambda: [
            am("PodNotReady", fp="pnr", minutes_ago=5, service="coredns", namespace="kube-system")
        ],
        "not_in_catalog",
        "service 'coredns' is not in the catalog",
    ),
    Attempt(
        "a catalog service said to be in kube-system",
        lambda: [am("CPUSaturation", fp="cpu", minutes_ago=5, namespace="kube-system")],
        "not_in_catalog",
        "namespace 'kube-system' is not where the catalog places 'checkout'",
    ),
    Attempt(
        "a manual rollback of a service outside the catalog",
        lambda: [by_hand("rollback", service="cart", scenario="data_consistency")],
        "not_in_catalog",
        "service 'cart' is not in the catalog",
    ),
]


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[SqliteJournal]:
    j = SqliteJournal(path=tmp_path / "journal.db")
    await j.open()
    yield j
    await j.close()


def shipped_pack(variant: str) -> RulePack:
    files = read_rule_files(RULES)
    if variant == "ci-only":
        [name] = [n for n in files if n.endswith("defaults.yaml")]
        narrowed = files[name].replace(
            "trusted_event_sources: []", f"trusted_event_sources: [{TRUSTED_PRODUCER}]"
        )
        assert narrowed != files[name]
        files[name] = narrowed
    return load_rule_pack(files)


class Recorder:
    """Decisions and deploy-hook calls the engine reports."""

    def __init__(self) -> None:
        self.deploys: list[Signal] = []

    async def on_deploy(self, signal: Signal) -> None:
        self.deploys.append(signal)


async def decide_all(
    journal: SqliteJournal, pack: RulePack, signals: list[Signal]
) -> tuple[Recorder, list[Remediation]]:
    await journal.record_signals(signals)
    recorder = Recorder()
    engine = DecisionEngine(
        journal=journal,
        pack=pack,
        facts=FakeFacts({s: (3, None) for s in pack.services}),
        dry_run=False,
        clock=Clock(NOW),
        notice_channels=("slack",),
        on_deploy=recorder.on_deploy,
    )
    assert await drain(engine) == len(signals)
    return recorder, await all_remediations(journal)


async def decision_of(journal: SqliteJournal, signal: Signal) -> tuple[str, str | None, str]:
    row = await journal.database.read(
        lambda conn: conn.execute(
            "SELECT outcome, reason, explanation FROM decisions WHERE signal_id = ?", (signal.id,)
        ).fetchone()
    )
    assert row is not None, f"{signal.kind} was not decided"
    return row[0], row[1], row[2]


@pytest.mark.parametrize("attempt", ATTEMPTS, ids=[a.name for a in ATTEMPTS])
async def test_a_forged_signal_ends_with_no_acting_plan_and_its_reason_journaled(
    journal: SqliteJournal, attempt: Attempt
) -> None:
    signals = attempt.build()
    recorder, rems = await decide_all(journal, shipped_pack(attempt.pack), signals)

    assert [r for r in rems if r.status in ACTING] == []
    last = signals[-1]
    outcome, reason, explanation = await decision_of(journal, last)
    assert (outcome, reason) == ("no_action", attempt.reason)
    assert attempt.fragment in explanation
    # Visible in the API: the attempt has a remediation row with its reason.
    [row] = [r for r in rems if r.signal_id == last.id]
    assert (row.status, row.reason) == ("skipped", attempt.reason)
    # Nothing forged reached the deploy hook (config snapshots are labelled with its revision).
    assert recorder.deploys == []
    notified = {n.message.payload["remediation_id"] for n in await outbox_messages(journal, "slack", limit=50)}  # fmt: skip
    assert (row.id in notified) is attempt.notify


async def test_forged_deploys_cannot_steer_or_crowd_out_the_real_history(
    journal: SqliteJournal,
) -> None:
    """Real deploy events for checkout (1 healthy, 2 failing), then more forged "deploys"
    than the history query reads: the rollback still goes to 1, the trusted revision."""
    real = [
        kafka("deployment.succeeded", event_id="d1", minutes_ago=24 * 60, revision="1"),
        kafka("deployment.succeeded", event_id="d2", minutes_ago=8, revision="2"),
    ]
    flood = [
        am("deployment.succeeded", fp=f"flood-{i}", minutes_ago=7, revision="666",
           previous_revision="2")
        for i in range(HISTORY_EVENTS + 10)
    ]  # fmt: skip
    trigger = am("PodNotReady", fp="pnr", minutes_ago=5)
    recorder, rems = await decide_all(journal, shipped_pack("shipped"), [*real, *flood, trigger])

    [plan] = [r for r in rems if r.status in ACTING]
    assert plan.signal_id == trigger.id
    detail = await journal.get_remediation(plan.id)
    assert detail is not None
    undo = detail.decision["steps"][0]
    assert (undo["kind"], undo["params"]["from_revision"], undo["params"]["to_revision"]) == (
        "rollout_undo", 2, 1,  # revisions are numbers
    )  # fmt: skip
    assert [s.id for s in recorder.deploys] == [s.id for s in real]


async def test_a_blue_green_switch_goes_only_to_a_selector_value_the_deploys_recorded(
    journal: SqliteJournal,
) -> None:
    real = [
        kafka("deployment.succeeded", event_id="b", minutes_ago=24 * 60, service="payments",
              namespace="payments", revision="blue"),
        kafka("deployment.succeeded", event_id="g", minutes_ago=8, service="payments",
              namespace="payments", revision="green"),
    ]  # fmt: skip
    forged = am("deployment.succeeded", fp="evil", minutes_ago=6, service="payments",
                namespace="payments", revision="attacker-pods", previous_revision="green")  # fmt: skip
    trigger = am("HighErrorRate", fp="err", minutes_ago=5, service="payments", namespace="payments")
    _, rems = await decide_all(journal, shipped_pack("shipped"), [*real, forged, trigger])

    [plan] = [r for r in rems if r.status in ACTING]
    detail = await journal.get_remediation(plan.id)
    assert detail is not None
    switch = detail.decision["steps"][0]
    assert switch["kind"] == "switch_selector"
    assert (switch["params"]["from_value"], switch["params"]["to_value"]) == ("green", "blue")


async def test_migration_failed_reverts_the_trusted_latest_only_after_approval(
    journal: SqliteJournal,
) -> None:
    recorded = kafka("migration.applied", event_id="mig-42", minutes_ago=30,
                     migration="042_add_index", version="v9.9.9")  # fmt: skip
    trigger = am("MigrationFailed", fp="mf", minutes_ago=5, migration="042_add_index")
    _, rems = await decide_all(journal, shipped_pack("shipped"), [recorded, trigger])

    [row] = [r for r in rems if r.signal_id == trigger.id]
    assert row.status == "awaiting_approval"  # nothing runs until a dba or tech lead says so
    detail = await journal.get_remediation(row.id)
    assert detail is not None
    assert detail.decision["approvers"] == ["dba", "tech-lead"]
    revert = [s for s in detail.decision["steps"] if s["kind"] == "revert_migration"]
    assert [s["params"]["migration"] for s in revert] == ["042_add_index"]
