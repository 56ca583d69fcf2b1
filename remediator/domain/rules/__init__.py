"""Rule engine core: rule files, matching, and the pure decision."""

from remediator.domain.rules.decide import decide, match_rule, rule_mismatch
from remediator.domain.rules.events import (
    HISTORY_KINDS,
    deploy_record_from_signal,
    history_trusted,
    migration_record_from_signal,
    signal_from_cloudevent,
)
from remediator.domain.rules.loader import (
    RuleFileError,
    RuleProblem,
    check_rule_pack,
    load_rule_pack,
)
from remediator.domain.rules.matchers import Matcher, MatchOp, parse_matcher
from remediator.domain.rules.model import Defaults, Rule, RulePack, ServiceSpec
from remediator.domain.rules.state import (
    CircuitState,
    DeployRecord,
    MigrationRecord,
    MigrationStatus,
    PastOutcome,
    RemediationRecord,
    ServiceState,
    circuit_trip_reason,
)

__all__ = [
    "HISTORY_KINDS",
    "CircuitState",
    "Defaults",
    "DeployRecord",
    "MatchOp",
    "Matcher",
    "MigrationRecord",
    "MigrationStatus",
    "PastOutcome",
    "RemediationRecord",
    "Rule",
    "RuleFileError",
    "RulePack",
    "RuleProblem",
    "ServiceSpec",
    "ServiceState",
    "check_rule_pack",
    "circuit_trip_reason",
    "decide",
    "deploy_record_from_signal",
    "history_trusted",
    "load_rule_pack",
    "match_rule",
    "migration_record_from_signal",
    "parse_matcher",
    "rule_mismatch",
    "signal_from_cloudevent",
]
