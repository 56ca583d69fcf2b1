"""Signals are trusted only for what their source knows, and only the catalog is in scope.

History (deploys, revisions, selector values, migrations) comes from trusted sources only;
an alert or a manual request says *that* something is wrong, never *what* to go back to.
The catalog bounds what may be touched, and protected namespaces stay out of it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from remediator.domain.plans import NoAction, NoActionReason, Plan, StepKind, explain
from remediator.domain.rules import (
    Defaults,
    MigrationRecord,
    MigrationStatus,
    RulePack,
    ServiceState,
    check_rule_pack,
    decide,
    deploy_record_from_signal,
    history_trusted,
    load_rule_pack,
    migration_record_from_signal,
)
from remediator.domain.signals import Signal, Source

from .conftest import NOW, alert, event, manual, shipped_files

ALERT_START = NOW - timedelta(minutes=10)


def migration(
    migration_id: str, status: MigrationStatus, *, minutes_ago: int, version: str | None = None
) -> MigrationRecord:
    return MigrationRecord(
        id=migration_id,
        status=status,
        at=NOW - timedelta(minutes=minutes_ago),
        version=version,
    )


APPLIED_041 = migration("041_users", MigrationStatus.APPLIED, minutes_ago=600)
FAILED_042 = migration("042_add_index", MigrationStatus.FAILED, minutes_ago=15, version="v1.4.0")


def state(**changes: Any) -> ServiceState:
    return ServiceState.model_validate({"current_replicas": 4, **changes})


def decided(pack: RulePack, signal: Signal, service_state: ServiceState) -> Plan | NoAction:
    return decide(signal, pack=pack, state=service_state, now=NOW)


def revert_step(plan: Plan) -> dict[str, Any]:
    [step] = [s for s in plan.steps if s.kind is StepKind.REVERT_MIGRATION]
    return step.params.model_dump()


# --- which signals become history -----------------------------------------------------


@pytest.mark.parametrize(
    ("signal", "trusted"),
    [
        (event("deployment.succeeded", revision="9"), True),
        (alert("deployment.succeeded", revision="1"), False),
        (manual("deployment.succeeded", revision="1"), False),
    ],
    ids=["kafka event", "alert named like the event", "manual request named like the event"],
)
def test_only_a_trusted_source_writes_deploy_history(signal: Signal, trusted: bool) -> None:
    defaults = Defaults()
    assert history_trusted(signal, defaults=defaults) is trusted
    record = deploy_record_from_signal(signal, defaults=defaults)
    assert (record is not None) is trusted


def test_alerts_and_requests_never_write_migration_history() -> None:
    defaults = Defaults()
    for forged in (
        alert("migration.failed", migration="001_init"),
        manual("migration.applied", migration="001_init"),
    ):
        assert migration_record_from_signal(forged, defaults=defaults) is None
    real = migration_record_from_signal(
        event("migration.applied", migration="043"), defaults=defaults
    )
    assert real is not None and real.status is MigrationStatus.APPLIED


def test_trusted_event_sources_narrow_the_kafka_producers() -> None:
    defaults = Defaults(trusted_event_sources=("ci/deployer",))
    from_ci = event("deployment.succeeded", revision="9", event_source="ci/deployer")
    from_elsewhere = event("deployment.succeeded", revision="9", event_source="laptop/mallory")
    assert deploy_record_from_signal(from_ci, defaults=defaults) is not None
    assert deploy_record_from_signal(from_elsewhere, defaults=defaults) is None
    # With no history source at all, nothing is history.
    assert deploy_record_from_signal(from_ci, defaults=Defaults(trusted_history_sources=())) is None


@pytest.mark.parametrize("source", ["alertmanager", "manual"])
def test_the_loader_refuses_to_trust_alerts_or_requests_for_history(source: str) -> None:
    files = shipped_files()
    [defaults_file] = [name for name in files if name.endswith("defaults.yaml")]
    files[defaults_file] = (
        f"defaults:\n  cooldown: 5m\n  trusted_history_sources: [kafka, {source}]\n"
    )
    _, problems = check_rule_pack(files)
    [problem] = [str(p) for p in problems]
    assert problem.endswith(
        f"defaults.yaml:3: defaults.trusted_history_sources: {source} cannot be trusted for "
        "deploy or migration history: it can say that something is wrong, never what to roll "
        "back to (allowed: kafka)"
    )


def test_the_shipped_pack_trusts_only_the_deploy_events() -> None:
    pack = load_rule_pack(shipped_files())
    assert pack.defaults.trusted_history_sources == (Source.KAFKA,)
    assert pack.defaults.trusted_event_sources == ()


# --- MigrationFailed: only the trusted latest, and only after approval --------------------


def test_an_alert_reverts_the_trusted_latest_migration_after_approval(pack: RulePack) -> None:
    plan = decided(
        pack,
        alert("MigrationFailed", migration="042_add_index"),
        state(migrations=(APPLIED_041, FAILED_042)),
    )
    assert isinstance(plan, Plan), explain(plan)
    assert plan.rule == "migration-failed-alert-revert"
    assert (plan.require_approval, plan.approvers) == (True, ("dba", "tech-lead"))
    assert revert_step(plan)["migration"] == "042_add_index"
    rule = pack.rule("migration-failed-alert-revert")
    assert rule is not None and rule.approval_timeout == timedelta(minutes=15)


def test_an_alert_without_a_migration_label_reverts_the_trusted_latest(pack: RulePack) -> None:
    # The latest may be applied: the alert says something failed, history says what ran last.
    applied_043 = migration("043_orders", MigrationStatus.APPLIED, minutes_ago=5)
    plan = decided(
        pack, alert("MigrationFailed"), state(migrations=(FAILED_042, APPLIED_041, applied_043))
    )
    assert isinstance(plan, Plan), explain(plan)
    assert revert_step(plan)["migration"] == "043_orders"


def test_an_alert_cannot_choose_the_release_either(pack: RulePack) -> None:
    # version=v9 on the alert would skip (or force) the application rollback: ignored, the
    # record's release counts. v1.4.0 is not the current deploy here, so no rollback step.
    plan = decided(
        pack,
        alert("MigrationFailed", migration="042_add_index", version="v9"),
        state(migrations=(FAILED_042,)),
    )
    assert isinstance(plan, Plan), explain(plan)
    assert StepKind.ROLLOUT_UNDO not in [s.kind for s in plan.steps]
    assert "v9" not in explain(plan)


@pytest.mark.parametrize(
    ("signal", "migrations", "fragment"),
    [
        (
            alert("MigrationFailed", migration="001_init"),
            (APPLIED_041, FAILED_042),
            "asks to revert migration '001_init', but the latest migration trusted history "
            "records for 'checkout' is '042_add_index' (failed at",
        ),
        (
            alert("MigrationFailed", migration="041_users"),
            (APPLIED_041, FAILED_042),
            "the latest migration trusted history records for 'checkout' is '042_add_index'",
        ),
        (
            alert("MigrationFailed", migration="042_add_index"),
            (),
            "but no trusted source (kafka) recorded a migration of 'checkout'",
        ),
        (
            alert("MigrationFailed"),
            (),
            "asks to revert a migration, but no trusted source (kafka) recorded",
        ),
        (
            alert("MigrationFailed"),
            (FAILED_042, migration("042_add_index", MigrationStatus.REVERTED, minutes_ago=1)),
            "is already reverted",
        ),
        (
            manual("revert_migration", migration="001_init"),
            (FAILED_042,),
            "manual request revert_migration for shop/checkout asks to revert migration "
            "'001_init', but the latest",
        ),
    ],
    ids=[
        "older migration named",
        "the one before the latest",
        "no trusted record",
        "no label, no record",
        "latest already reverted",
        "manual request naming another",
    ],
)
def test_anything_else_needs_a_human_with_the_reason(
    pack: RulePack, signal: Signal, migrations: tuple[MigrationRecord, ...], fragment: str
) -> None:
    decision = decided(pack, signal, state(migrations=migrations))
    assert isinstance(decision, NoAction), explain(decision)
    assert decision.reason is NoActionReason.NEEDS_HUMAN
    assert fragment in decision.detail
    assert decision.detail.endswith("; people decide")
    assert decision.notify  # like an escalation: people hear of it
    assert decision.plan is None


def test_the_kafka_event_may_name_its_migration_and_runs_without_approval(
    pack: RulePack,
) -> None:
    # The deploy pipeline is the source of migration history: its event names the migration.
    plan = decided(
        pack, event("migration.failed", migration="042_add_index"), state(migrations=(FAILED_042,))
    )
    assert isinstance(plan, Plan), explain(plan)
    assert (plan.rule, plan.require_approval) == ("migration-failed-revert", False)
    assert revert_step(plan)["migration"] == "042_add_index"


def test_a_kafka_event_from_an_untrusted_producer_is_held_to_the_history(pack: RulePack) -> None:
    defaults = pack.defaults.model_copy(update={"trusted_event_sources": ("ci/deployer",)})
    narrowed = pack.model_copy(update={"defaults": defaults})
    forged = event("migration.failed", migration="001_init", event_source="laptop/mallory")
    decision = decided(narrowed, forged, state(migrations=(FAILED_042,)))
    assert isinstance(decision, NoAction), explain(decision)
    assert decision.reason is NoActionReason.NEEDS_HUMAN


# --- scope: the catalog, namespaces, protected namespaces ----------------------------------


@pytest.mark.parametrize(
    ("signal", "fragment"),
    [
        (alert("HighErrorRate", service="cart"), "service 'cart' is not in the catalog"),
        (
            alert("HighErrorRate", namespace="kube-system"),
            "namespace 'kube-system' is not where the catalog places 'checkout' ('shop')",
        ),
        (alert("DiskFull", service="coredns", namespace="kube-system"), "'coredns' is not in"),
        (event("deployment.succeeded", service="cart"), "service 'cart' is not in the catalog"),
        (manual("rollback", service="cart", scenario="data_consistency"), "'cart' is not in"),
    ],
    ids=["unknown service", "wrong namespace", "no rule either", "event", "manual request"],
)
def test_signals_outside_the_catalog_are_not_in_catalog(
    pack: RulePack, signal: Signal, fragment: str
) -> None:
    decision = decided(pack, signal, state())
    assert isinstance(decision, NoAction), explain(decision)
    assert decision.reason is NoActionReason.NOT_IN_CATALOG
    assert fragment in decision.detail
    assert not decision.notify


def test_a_pack_built_around_the_loader_still_keeps_out_of_protected_namespaces(
    pack: RulePack,
) -> None:
    # The loader refuses such a catalog; decide() holds the line on its own too.
    inside = pack.services["checkout"].model_copy(update={"namespace": "kube-system"})
    forged = pack.model_copy(update={"services": {**pack.services, "checkout": inside}})
    decision = decided(forged, alert("HighErrorRate", namespace="kube-system"), state())
    assert isinstance(decision, NoAction)
    assert (decision.reason, decision.detail.split(": ", 1)[1]) == (
        NoActionReason.NOT_IN_CATALOG,
        "namespace 'kube-system' is protected; remediator acts only on the catalog's services",
    )


CATALOG_IN = """\
services:
  dns:
    namespace: {namespace}
    workload: coredns
    rollback: {{strategy: rolling}}
"""


@pytest.mark.parametrize("namespace", ["kube-system", "kube-public", "kube-node-lease"])
def test_a_catalog_entry_in_a_protected_namespace_is_a_load_error(namespace: str) -> None:
    _, problems = check_rule_pack({"catalog.yaml": CATALOG_IN.format(namespace=namespace)})
    assert [str(p) for p in problems] == [
        f"catalog.yaml:3: services.dns.namespace: namespace {namespace!r} is protected: "
        "remediator acts there only if defaults.allow_protected_namespaces lists it"
    ]


def test_protected_namespaces_are_allowed_only_by_name() -> None:
    catalog = CATALOG_IN.format(namespace="kube-system")
    allowed = "defaults:\n  allow_protected_namespaces: [kube-system]\n"
    pack = load_rule_pack({"catalog.yaml": catalog, "defaults.yaml": allowed})
    assert pack.out_of_scope("dns", "kube-system") is None
    # Emptying the list does not unprotect the cluster's own namespaces ...
    emptied = "defaults:\n  protected_namespaces: []\n"
    _, problems = check_rule_pack({"catalog.yaml": catalog, "defaults.yaml": emptied})
    assert [p.field for p in problems] == ["services.dns.namespace"]
    # ... and a pack may protect more of its own.
    more = "defaults:\n  protected_namespaces: [remediator]\n"
    _, problems = check_rule_pack(
        {"catalog.yaml": CATALOG_IN.format(namespace="remediator"), "defaults.yaml": more}
    )
    assert [(p.file, p.line, p.field) for p in problems] == [
        ("catalog.yaml", 3, "services.dns.namespace")
    ]
