"""``remediator rules check`` and ``remediator rules explain``."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from remediator.cli.common import with_examples
from remediator.domain.errors import ConfigError, InvalidInput
from remediator.domain.plans import explain
from remediator.domain.rules import (
    RulePack,
    ServiceState,
    check_rule_pack,
    decide,
    match_rule,
    rule_mismatch,
    signal_from_cloudevent,
)
from remediator.domain.signals import (
    DEFAULT_NAMESPACE_LABELS,
    DEFAULT_SERVICE_LABELS,
    Signal,
    Source,
    Status,
    alert_key,
    resolve_label,
    signal_time,
)
from remediator.rulefiles import read_rule_files

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rules = subparsers.add_parser(
        "rules",
        help="check rule files and explain decisions",
        epilog=with_examples(
            """\
            remediator rules check rules/
            remediator rules explain --rules rules/ --alert alert.json
            """
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = rules.add_subparsers(dest="rules_command", required=True)

    check = commands.add_parser(
        "check",
        help="validate rule files; exit 1 listing every problem as file:line",
        epilog=with_examples(
            """\
            remediator rules check rules/
            remediator rules check /etc/remediator/rules    # exit 1: problems listed as file:line
            """
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("path", nargs="?", default="rules", help="rule file or directory")
    check.set_defaults(func=run_check)

    explain_parser = commands.add_parser(
        "explain",
        help="show which rule matches a signal and what would be done, and why",
        epilog=with_examples(
            """\
            remediator rules explain --rules rules/ --alert alert.json
            remediator rules explain --event deploy.json --state state.yaml \\
                --now 2026-11-30T09:00:00Z
            """
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    explain_parser.add_argument("--rules", default="rules", help="rule file or directory")
    given = explain_parser.add_mutually_exclusive_group(required=True)
    given.add_argument("--alert", help="Alertmanager webhook payload or one alert (JSON)")
    given.add_argument("--event", help="CloudEvent in structured mode (JSON)")
    explain_parser.add_argument("--state", help="service state (JSON or YAML)")
    explain_parser.add_argument("--now", help="decision time, ISO 8601 (default: now)")
    explain_parser.add_argument(
        "--dry-run", action="store_true", help="decide as a daemon in dry-run mode would"
    )
    explain_parser.set_defaults(func=run_explain)


def run_check(args: argparse.Namespace) -> int:
    try:
        files = read_rule_files(args.path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_PROBLEMS
    pack, problems = check_rule_pack(files)
    if problems or pack is None:
        for problem in problems:
            print(problem)
        print(f"{len(problems)} problem(s) in {len(files)} file(s)")
        return EXIT_PROBLEMS
    print(
        f"ok: {len(pack.services)} service(s), {len(pack.rules)} rule(s) "
        f"in {len(files)} file(s): {', '.join(files)}"
    )
    return EXIT_OK


def run_explain(args: argparse.Namespace) -> int:
    try:
        files = read_rule_files(args.rules)
        pack, problems = check_rule_pack(files)
        if problems or pack is None:
            for problem in problems:
                print(problem, file=sys.stderr)
            return EXIT_PROBLEMS
        now = _parse_time(args.now, where="--now") if args.now else datetime.now(UTC)
        if now is None:
            raise InvalidInput("needs a time", where="--now")
        state = _load_state(args.state) if args.state else ServiceState()
        if args.alert:
            signals = signals_from_alert_payload(_read_json(args.alert), received_at=now)
        else:
            signals = [signal_from_cloudevent(_read_json(args.event), received_at=now)]
    except (ConfigError, InvalidInput) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    for index, signal in enumerate(signals):
        if index:
            print()
        print(explain_signal(signal, pack=pack, state=state, now=now, dry_run=args.dry_run))
    return EXIT_OK


def explain_signal(
    signal: Signal, *, pack: RulePack, state: ServiceState, now: datetime, dry_run: bool = False
) -> str:
    """The text ``rules explain`` prints for one signal."""
    lines = [
        f"signal: {signal.source.value} {signal.kind} ({signal.status.value}) "
        f"service={signal.service or '-'} namespace={signal.namespace or '-'}"
    ]
    rule = match_rule(signal, pack=pack)
    if rule is None:
        lines.append("matching rule: none")
        for candidate in pack.rules:
            if candidate.match.source is signal.source:
                lines.append(f"  {candidate.name}: {rule_mismatch(candidate, signal)}")
    else:
        origin = pack.origins.get(rule.name, "")
        lines.append(f"matching rule: {rule.name}" + (f" ({origin})" if origin else ""))
    decision = decide(signal, pack=pack, state=state, now=now, dry_run=dry_run)
    lines.append(explain(decision))
    return "\n".join(lines)


def signals_from_alert_payload(
    payload: Mapping[str, Any], *, received_at: datetime
) -> list[Signal]:
    """Signals for an Alertmanager v4 webhook payload, or for a single alert object."""
    if isinstance(payload.get("alerts"), list):
        receiver = str(payload.get("receiver", ""))
        group_status = str(payload.get("status", "firing"))
        alerts = payload["alerts"]
    elif isinstance(payload.get("labels"), Mapping):
        receiver, group_status, alerts = "explain", "firing", [payload]
    else:
        raise InvalidInput("expected a webhook payload with 'alerts' or one alert", where="alert")
    signals = []
    for position, alert in enumerate(alerts):
        where = f"alerts[{position}]"
        if not isinstance(alert, Mapping) or not isinstance(alert.get("labels"), Mapping):
            raise InvalidInput("an alert needs a 'labels' object", where=where)
        labels = {str(key): str(value) for key, value in alert["labels"].items()}
        annotations = {str(k): str(v) for k, v in (alert.get("annotations") or {}).items()}
        status_text = str(alert.get("status") or group_status)
        try:
            status = Status(status_text)
        except ValueError:
            raise InvalidInput(f"unknown status {status_text!r}", where=where) from None
        starts_at = str(alert.get("startsAt") or "")
        signals.append(
            Signal(
                key=alert_key(
                    receiver=receiver,
                    fingerprint=str(alert.get("fingerprint", "")),
                    starts_at=starts_at,
                    status=status_text,
                ),
                source=Source.ALERTMANAGER,
                kind=labels.get("alertname", ""),
                status=status,
                service=resolve_label(labels, DEFAULT_SERVICE_LABELS),
                namespace=resolve_label(labels, DEFAULT_NAMESPACE_LABELS),
                labels=labels,
                annotations=annotations,
                starts_at=_parse_time(starts_at, where=f"{where}.startsAt"),
                ends_at=_parse_time(str(alert.get("endsAt") or ""), where=f"{where}.endsAt"),
                received_at=received_at,
                raw=dict(alert),
            )
        )
    return signals


_FRACTION = re.compile(r"(\.\d{6})\d+")


def _parse_time(text: str, *, where: str) -> datetime | None:
    # Alertmanager writes Go's zero time for "unset" and nanosecond fractions.
    if not text or text.startswith("0001-01-01"):
        return None
    try:
        parsed = datetime.fromisoformat(_FRACTION.sub(r"\1", text))
    except ValueError:
        raise InvalidInput(f"not an ISO 8601 time: {text!r}", where=where) from None
    return signal_time(parsed, where=where)  # naive means UTC; the range rules compute with


def _read_json(path: str) -> Mapping[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"cannot read JSON: {exc}", where=path) from None
    if not isinstance(data, Mapping):
        raise InvalidInput("expected a JSON object", where=path)
    return data


def _load_state(path: str) -> ServiceState:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))  # YAML is a JSON superset
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInput(f"cannot read state: {exc}", where=path) from None
    try:
        return ServiceState.model_validate(data or {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        )
        raise InvalidInput(problems, where=path) from None
