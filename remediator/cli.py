"""Command line: run, signals, remediations, circuit, rules, config show, version."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import textwrap
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import orjson

import remediator
from remediator import cli_db, cli_rules
from remediator.domain.errors import ConfigError, RemediatorError
from remediator.logs import configure_logging
from remediator.ports import CircuitRecord, Journal
from remediator.settings import DEFAULT_JOURNAL, DEFAULT_LISTEN, Settings, load_settings

log = logging.getLogger("remediator")
_T = TypeVar("_T")

EPILOG = textwrap.dedent(
    """\
    examples:
      remediator run                                  # 127.0.0.1:9095, journal var/remediator.db
      REMEDIATOR_WEBHOOK_TOKEN=s3cret remediator run --listen 0.0.0.0:9095
      remediator run --config /etc/remediator/config.yaml --dry-run
      remediator signals --service checkout --limit 20
      remediator remediations --status skipped        # what was decided, and why
      remediator remediations rem_0123abcd            # one decision in full
      remediator history --service checkout           # what was done, step by step
      remediator circuit reset                        # close the circuit breaker
      remediator config show                          # effective settings, secrets masked
      remediator rules check rules/                   # validate rule files, exit 1 on problems
      remediator rules explain --rules rules/ --alert alert.json

    Every setting can also come from the environment (REMEDIATOR_ prefix, __ between
    nested names, e.g. REMEDIATOR_HTTP__BODY_LIMIT_BYTES) or from the --config YAML
    file. Flags beat the environment, which beats the file.
    """
)


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="FILE", help="YAML settings file.")
    parser.add_argument(
        "--journal", metavar="URL", help=f"Journal location (default {DEFAULT_JOURNAL})."
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="remediator",
        description="Turn Alertmanager alerts and deployment events into safe, recorded "
        "remediations on Kubernetes.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser(
        "run",
        help="Run the daemon.",
        description="Run the daemon: serve the webhook, API, /healthz, /readyz and /metrics. "
        "SIGTERM drains: new webhooks get 503, in-flight ones finish, then it exits 0.",
    )
    _add_settings_flags(run)
    run.add_argument(
        "--listen", metavar="HOST:PORT", help=f"Bind address (default {DEFAULT_LISTEN})."
    )
    run.add_argument("--rules", type=Path, metavar="PATH", help="Rule directory (default rules/).")
    run.add_argument("--dry-run", action="store_true", default=None, help="Decide, change nothing.")
    run.add_argument("--log-format", choices=["text", "json"], help="Log format (default text).")
    run.add_argument(
        "--kubeconfig",
        type=Path,
        metavar="PATH",
        help="Cluster to act on (default: in-cluster config, else ~/.kube/config).",
    )
    run.add_argument(
        "--instance-id", help="This replica's name in per-service Leases (default: hostname)."
    )
    run.add_argument(
        "--kafka-bootstrap",
        metavar="HOST:PORT[,...]",
        help="Kafka brokers for deploy events and outcome events (default: none, webhook-only).",
    )
    run.add_argument(
        "--insecure-no-auth",
        action="store_true",
        default=None,
        help="Allow a non-loopback --listen with no webhook credential configured.",
    )
    run.set_defaults(func=cmd_run)

    signals = sub.add_parser(
        "signals",
        help="List journaled signals, newest first.",
        description="List journaled signals.",
    )
    _add_settings_flags(signals)
    signals.add_argument("--service", help="Only this service.")
    signals.add_argument("--limit", type=int, default=20, help="How many (default 20).")
    signals.add_argument("--json", action="store_true", help="One JSON object per line.")
    signals.set_defaults(func=cmd_signals)

    rems = sub.add_parser(
        "remediations",
        help="List decisions that opened or skipped a remediation, newest first.",
        description="List remediations (planned, dry-run, skipped with reason, ...), or show "
        "one with its full decision and explanation.",
    )
    _add_settings_flags(rems)
    rems.add_argument("id", nargs="?", help="Show this remediation in full.")
    rems.add_argument("--service", help="Only this service.")
    rems.add_argument("--status", help="Only this status (planned, dry-run, skipped, ...).")
    rems.add_argument("--limit", type=int, default=20, help="How many (default 20).")
    rems.add_argument("--json", action="store_true", help="JSON output.")
    rems.set_defaults(func=cmd_remediations)

    history = sub.add_parser(
        "history",
        help="Show remediations with their step-by-step timeline.",
        description="The timeline of remediations: when each was decided, claimed, every "
        "step started and finished (with what it changed or why it failed), and the end.",
    )
    _add_settings_flags(history)
    history.add_argument("id", nargs="?", help="One remediation (default: the newest ones).")
    history.add_argument("--service", help="Only this service.")
    history.add_argument("--limit", type=int, default=5, help="How many (default 5).")
    history.set_defaults(func=cmd_history)

    report = sub.add_parser(
        "report",
        help="Print the rollback record of a remediation.",
        description="Print the rollback record (basic facts, timeline, results, impact, and "
        "root cause / improvements / lessons to fill in) as Markdown, HTML or JSON.",
    )
    _add_settings_flags(report)
    report.add_argument("id", help="Remediation id (see `remediator remediations`).")
    report.add_argument("--format", choices=["md", "html", "json"], default="md")
    report.set_defaults(func=cmd_report)

    approve = sub.add_parser(
        "approve",
        help="Approve a plan whose rule requires approval.",
        description="Rules may require approval (the manual scenarios do). Such plans wait "
        "as awaiting_approval; approving makes them runnable. Also POST "
        "/api/v1/remediations/{id}/approve.",
    )
    _add_settings_flags(approve)
    approve.add_argument("id", help="Remediation id (see `remediator remediations`).")
    approve.add_argument("--by", required=True, help="Who approves (recorded).")
    approve.set_defaults(func=cmd_approve)

    circuit = sub.add_parser(
        "circuit",
        help="Show or reset the global circuit breaker.",
        description="While the breaker is open, rules only notify. It opens after too many "
        "automated actions in a window or too many failed remediations in a row; only a "
        "reset closes it.",
    )
    circuit_sub = circuit.add_subparsers(
        dest="circuit_command", metavar="SUBCOMMAND", required=True
    )
    for name, helptext in (("status", "Show the breaker."), ("reset", "Close the breaker.")):
        cmd = circuit_sub.add_parser(name, help=helptext)
        _add_settings_flags(cmd)
        cmd.set_defaults(func=cmd_circuit)

    config = sub.add_parser("config", help="Inspect settings.")
    config_sub = config.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)
    show = config_sub.add_parser("show", help="Print the effective settings, secrets masked.")
    _add_settings_flags(show)
    show.set_defaults(func=cmd_config_show)

    cli_rules.register(sub)
    cli_db.register(sub)

    version = sub.add_parser("version", help="Print the version.")
    version.set_defaults(func=cmd_version)
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Flags given on the command line, shaped like Settings (nested groups as dicts)."""
    out: dict[str, Any] = {}
    http: dict[str, Any] = {}
    if getattr(args, "journal", None):
        out["journal"] = {"url": args.journal}
    if getattr(args, "listen", None):
        http["listen"] = args.listen
    if getattr(args, "insecure_no_auth", None):
        http["insecure_no_auth"] = True
    if http:
        out["http"] = http
    if getattr(args, "rules", None):
        out["rules_path"] = args.rules
    if getattr(args, "dry_run", None):
        out["dry_run"] = True
    kubernetes: dict[str, Any] = {}
    if getattr(args, "kubeconfig", None):
        kubernetes["kubeconfig"] = args.kubeconfig
    if getattr(args, "instance_id", None):
        kubernetes["instance_id"] = args.instance_id
    if kubernetes:
        out["kubernetes"] = kubernetes
    if getattr(args, "kafka_bootstrap", None):
        out["kafka"] = {"bootstrap_servers": args.kafka_bootstrap}
    if getattr(args, "log_format", None):
        out["log"] = {"format": args.log_format}
    return out


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(config_file=getattr(args, "config", None), overrides=_overrides(args))


def cmd_run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    configure_logging(fmt=settings.log.format, level=settings.log.level)
    # uvloop: about 15% more webhook throughput measured on our machines (bench/intake.py).
    import uvloop

    from remediator.runtime import Runtime  # heavy imports only for the daemon

    uvloop.install()
    return asyncio.run(Runtime(settings).run())


def cmd_signals(args: argparse.Namespace) -> int:
    async def fetch(journal: Journal) -> list[dict[str, Any]]:
        page = await journal.list_signals(service=args.service, limit=args.limit)
        return list(page.items)

    items = _with_journal(args, fetch)
    if args.json:
        for item in items:
            sys.stdout.write(orjson.dumps(item).decode() + "\n")
        return 0
    if not items:
        print("no signals journaled" + (f" for service {args.service}" if args.service else ""))
        return 0
    print(f"{'RECEIVED':27} {'SOURCE':12} {'STATUS':8} {'SERVICE':20} {'NAMESPACE':15} KIND")
    for item in items:
        service = item["service"] or "(unroutable)"
        print(
            f"{item['received_at']:27} {item['source']:12} {item['status']:8} "
            f"{service:20} {item['namespace'] or '-':15} {item['kind']}"
        )
    return 0


def _with_journal(args: argparse.Namespace, work: Callable[[Journal], Awaitable[_T]]) -> _T:
    settings = _settings(args)
    from remediator.journal import journal_from_url

    async def run() -> _T:
        journal = journal_from_url(settings.journal.url)
        await journal.open()
        try:
            return await work(journal)
        finally:
            await journal.close()

    return asyncio.run(run())


def cmd_remediations(args: argparse.Namespace) -> int:
    if args.id:
        item = _with_journal(args, lambda j: j.get_remediation(args.id))
        if item is None:
            print(f"remediator: no remediation {args.id!r}", file=sys.stderr)
            return 1
        if args.json:
            sys.stdout.write(orjson.dumps(item, option=orjson.OPT_INDENT_2).decode() + "\n")
        else:
            print(f"{item['id']}  {item['status']}  {item['service']}  rule={item['rule']}")
            print(f"created {item['created_at']}  signal {item['signal_id']}\n")
            print(item["explanation"])
        return 0

    async def fetch(journal: Journal) -> list[dict[str, Any]]:
        page = await journal.list_remediations(
            service=args.service, status=args.status, limit=args.limit
        )
        return list(page.items)

    items = _with_journal(args, fetch)
    if args.json:
        for item in items:
            sys.stdout.write(orjson.dumps(item).decode() + "\n")
        return 0
    if not items:
        print("no remediations")
        return 0
    print(f"{'CREATED':27} {'ID':28} {'STATUS':9} {'SERVICE':16} {'ACTION':12} REASON")
    for item in items:
        print(
            f"{item['created_at']:27} {item['id']:28} {item['status']:9} {item['service']:16} "
            f"{item['action'] or '-':12} {item['reason'] or ''}"
        )
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    async def fetch(journal: Journal) -> list[dict[str, Any]]:
        if args.id:
            item = await journal.get_remediation(args.id)
            return [item] if item else []
        page = await journal.list_remediations(service=args.service, limit=args.limit)
        items = [await journal.get_remediation(i["id"]) for i in page.items]
        return [i for i in items if i is not None]

    items = _with_journal(args, fetch)
    if not items:
        print("no remediations" if not args.id else f"remediator: no remediation {args.id!r}")
        return 0 if not args.id else 1
    for item in items:
        print(f"{item['id']}  {item['service']}  {item['action'] or '-'}  {item['status']}"
              + (f" ({item['reason']})" if item["reason"] else ""))  # fmt: skip
        print(f"  {item['created_at']}  decided by rule {item['rule']}")
        if item["claimed_at"]:
            print(f"  {item['claimed_at']}  claimed by {item['claimed_by']}")
        for step in item.get("steps", ()):
            detail = step["detail"].get("error") or step["detail"].get("summary") or ""
            print(f"  {step['finished_at'] or step['started_at']}  {step['kind']:<18} "
                  f"{step['status']:<9} {detail}")  # fmt: skip
        if item["finished_at"]:
            print(f"  {item['finished_at']}  finished: {item['status']}")
        print()
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from remediator.domain.record import render
    from remediator.domain.record_build import record_from_journal

    async def fetch(journal: Journal) -> str | None:
        item = await journal.get_remediation(args.id)
        if item is None:
            return None
        signal = await journal.get_signal(item["signal_id"])
        return render(record_from_journal(item, signal), fmt=args.format)

    text = _with_journal(args, fetch)
    if text is None:
        print(f"remediator: no remediation {args.id!r}", file=sys.stderr)
        return 1
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    async def work(journal: Journal) -> tuple[bool, dict[str, Any] | None]:
        approved = await journal.approve_remediation(args.id, by=args.by, at=datetime.now(UTC))
        return approved, await journal.get_remediation(args.id)

    approved, item = _with_journal(args, work)
    if item is None:
        print(f"remediator: no remediation {args.id!r}", file=sys.stderr)
        return 1
    if not approved:
        print(f"remediator: {args.id} is {item['status']}, not awaiting approval", file=sys.stderr)
        return 1
    print(f"{args.id} approved by {args.by}: {item['action']} on {item['service']} will run")
    return 0


def cmd_circuit(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    async def work(journal: Journal) -> CircuitRecord:
        if args.circuit_command == "reset":
            await journal.set_circuit(open=False, reason=None, at=datetime.now(UTC))
        return await journal.circuit()

    record = _with_journal(args, work)
    state = "OPEN: rules only notify" if record.open else "closed"
    print(f"circuit breaker {state}")
    if record.reason:
        print(f"reason: {record.reason}")
    if record.changed_at:
        print(f"since: {record.changed_at.isoformat()}")
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    settings = _settings(args)
    sys.stdout.write(orjson.dumps(settings.redacted(), option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


def cmd_version(args: argparse.Namespace) -> int:
    print(f"remediator {remediator.__version__} (Python {sys.version.split()[0]})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"remediator: configuration error: {exc}", file=sys.stderr)
        return 2
    except RemediatorError as exc:
        print(f"remediator: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code
