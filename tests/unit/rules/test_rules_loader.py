"""Rule files: the shipped pack loads; every problem names file, line and field."""

from __future__ import annotations

from datetime import timedelta

import pytest

from remediator.domain.errors import ConfigError
from remediator.domain.plans import ActionKind
from remediator.domain.rules import RuleFileError, check_rule_pack, load_rule_pack
from remediator.domain.rules.model import BlueGreenRollback, CanaryRollback, HelmRollback
from remediator.domain.signals import Source

from .conftest import shipped_files

CATALOG = """\
services:
  checkout:
    namespace: shop
    workload: checkout
    rollback: {strategy: rolling}
    scale: {max_replicas: 5}
"""


def problems_for(files: dict[str, str]) -> list[str]:
    _, problems = check_rule_pack(files)
    return [str(problem) for problem in problems]


def test_shipped_pack_loads_with_the_seven_triggers() -> None:
    pack = load_rule_pack(shipped_files())
    kinds = {kind for rule in pack.rules for kind in rule.match.kinds}
    assert {
        "HealthCheckFailureRate",
        "HighErrorRate",
        "HighLatencyP99",
        "PodNotReady",
        "MemoryPressure",
        "CPUSaturation",
        "MigrationFailed",
        "migration.failed",
    } <= kinds
    assert {type(spec.rollback) for spec in pack.services.values()} >= {
        BlueGreenRollback,
        CanaryRollback,
        HelmRollback,
    }
    assert pack.defaults.recent_deploy_window == timedelta(minutes=30)
    assert pack.defaults.cooldown == timedelta(minutes=30)
    assert pack.origins["high-error-rate-rollback"].endswith("remediation.yaml:15")


def test_a_typo_names_file_line_and_field() -> None:
    rules = """\
rules:
  - name: errors
    match: {source: alertmanager, kinds: [HighErrorRate]}
    action: rollback
    cooldwn: 5m
"""
    assert problems_for({"catalog.yaml": CATALOG, "rules.yaml": rules}) == [
        "rules.yaml:5: rules[0].cooldwn: Extra inputs are not permitted"
    ]


def test_every_problem_is_listed_not_just_the_first() -> None:
    broken = """\
services:
  payments:
    namespace: payments
    workload: payments
    rollback:
      strategy: blue-green
      service_name: payments
  search:
    namespace: search
    workload: search
    rollback: {strategy: canary, route_name: search}
rules:
  - name: latency
    match:
      source: alertmanager
      matchers: ['severity=~"(crit"']
    action: roll_back
  - name: mem
    match: {source: kafka}
    action: scale_up
    cooldown: 5 minutes
"""
    found = problems_for({"broken.yaml": broken})
    assert found == [
        "broken.yaml:5: services.payments.rollback.selector_label: Field required",
        "broken.yaml:11: services.search.rollback.canary_deployment: Field required",
        "broken.yaml:11: services.search.rollback.stable_deployment: Field required",
        "broken.yaml:16: rules[0].match.matchers[0]: invalid regex in matcher "
        "'severity=~\"(crit\"': missing closing ) (RE2 syntax, as Alertmanager compiles it)",
        "broken.yaml:17: rules[0].action: Input should be 'rollback', 'scale_up', "
        "'scale_or_rollback', 'revert_migration', 'restore_config' or 'notify_only'",
        "broken.yaml:21: rules[1].cooldown: invalid duration '5 minutes': use forms like "
        "90s, 30m, 1h30m, 2d (units y w d h m s ms, largest first, each once)",
    ]


def test_helm_needs_a_release_and_unknown_strategies_are_named() -> None:
    catalog = """\
services:
  web:
    namespace: web
    workload: web
    rollback: {strategy: helm}
  api:
    namespace: web
    workload: api
    rollback: {strategy: recreate}
"""
    found = problems_for({"catalog.yaml": catalog})
    assert found[0] == "catalog.yaml:5: services.web.rollback.release: Field required"
    assert found[1].startswith("catalog.yaml:9: services.api.rollback: Input tag 'recreate'")


def test_yaml_syntax_errors_name_the_line() -> None:
    assert problems_for({"bad.yaml": "rules:\n  - name: x\n   action: [\n"})[0].startswith(
        "bad.yaml:3: (file): invalid YAML"
    )


def test_duplicate_keys_are_errors_not_silently_last_wins() -> None:
    text = CATALOG + "rules: []\nrules: []\n"
    assert problems_for({"c.yaml": text}) == ["c.yaml:8: rules: duplicate key (first on line 7)"]


def test_top_level_must_be_a_mapping() -> None:
    assert problems_for({"list.yaml": "- a\n- b\n"}) == [
        "list.yaml:1: (file): top level must be a mapping of services, rules, defaults"
    ]


def test_cross_references_are_checked_across_files() -> None:
    rules = """\
rules:
  - name: revert
    match: {source: kafka, kinds: [migration.failed], services: [checkout]}
    action: revert_migration
  - name: cart
    match:
      source: alertmanager
      services: [cart]
    action: rollback
"""
    assert problems_for({"catalog.yaml": CATALOG, "rules.yaml": rules}) == [
        "rules.yaml:3: rules[0].match.services[0]: service 'checkout' lacks database: "
        "revert_migration needs database settings",
        "rules.yaml:8: rules[1].match.services[0]: unknown service 'cart' (catalog has: checkout)",
    ]


def test_names_must_be_unique_across_files() -> None:
    rule = "rules:\n  - name: r\n    match: {source: manual}\n    action: notify_only\n"
    defaults = "defaults: {cooldown: 10m}\n"
    found = problems_for(
        {"a.yaml": CATALOG + defaults, "b.yaml": CATALOG + rule, "c.yaml": rule + defaults}
    )
    assert found == [
        "b.yaml:2: services.checkout: service defined twice (first at a.yaml:2)",
        "c.yaml:2: rules[0].name: rule 'r' defined twice (first at b.yaml:8)",
        "c.yaml:5: defaults: defaults given twice (first at a.yaml:7)",
    ]


def test_load_raises_one_error_carrying_all_problems() -> None:
    with pytest.raises(RuleFileError) as caught:
        load_rule_pack({"x.yaml": "rules: [{name: Bad Name, match: {source: x}, action: y}]\n"})
    assert isinstance(caught.value, ConfigError)
    assert {problem.field for problem in caught.value.problems} == {
        "rules[0].name",
        "rules[0].match.source",
        "rules[0].action",
    }
    assert all(problem.file == "x.yaml" and problem.line == 1 for problem in caught.value.problems)


def test_no_files_is_a_problem() -> None:
    assert problems_for({}) == ["(rules): (file): no rule files given"]


def test_empty_files_are_allowed_and_defaults_apply() -> None:
    pack = load_rule_pack({"catalog.yaml": CATALOG, "empty.yaml": ""})
    assert pack.rules == ()
    assert pack.defaults.max_actions_per_service_per_day == 3


def test_rule_fields_parse() -> None:
    rules = """\
rules:
  - name: mem
    match:
      source: alertmanager
      kinds: [MemoryPressure]
      matchers: ['team=~"core|shop"', "env!=dev"]
      services: [checkout]
    action: scale_or_rollback
    cooldown: 1h30m
    dry_run: true
    require_approval: true
    approvers: [tech-lead]
"""
    rule = load_rule_pack({"catalog.yaml": CATALOG, "r.yaml": rules}).rules[0]
    assert rule.match.source is Source.ALERTMANAGER
    assert [str(m) for m in rule.match.matchers] == ['team=~"core|shop"', 'env!="dev"']
    assert rule.action is ActionKind.SCALE_OR_ROLLBACK
    assert rule.cooldown == timedelta(hours=1, minutes=30)
    assert (rule.dry_run, rule.require_approval, rule.approvers) == (True, True, ("tech-lead",))
