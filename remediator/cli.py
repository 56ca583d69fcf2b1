"""Command line: ``remediator run|signals|config show|version``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

import remediator
from remediator.domain.errors import ConfigError, RemediatorError
from remediator.logs import configure_logging
from remediator.settings import DEFAULT_JOURNAL, DEFAULT_LISTEN, Settings, load_settings

log = logging.getLogger("remediator")

EPILOG = textwrap.dedent(
    """\
    examples:
      remediator run                                  # 127.0.0.1:9095, journal var/remediator.db
      REMEDIATOR_WEBHOOK_TOKEN=s3cret remediator run --listen 0.0.0.0:9095
      remediator run --config /etc/remediator/config.yaml --dry-run
      remediator signals --service checkout --limit 20
      remediator config show                          # effective settings, secrets masked

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

    config = sub.add_parser("config", help="Inspect settings.")
    config_sub = config.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)
    show = config_sub.add_parser("show", help="Print the effective settings, secrets masked.")
    _add_settings_flags(show)
    show.set_defaults(func=cmd_config_show)

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
    if getattr(args, "log_format", None):
        out["log"] = {"format": args.log_format}
    return out


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(config_file=getattr(args, "config", None), overrides=_overrides(args))


def cmd_run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    configure_logging(fmt=settings.log.format, level=settings.log.level)
    from remediator.runtime import Runtime  # heavy imports only for the daemon

    return asyncio.run(Runtime(settings).run())


def cmd_signals(args: argparse.Namespace) -> int:
    settings = _settings(args)
    from remediator.journal import journal_from_url

    async def fetch() -> list[dict[str, Any]]:
        journal = journal_from_url(settings.journal.url)
        await journal.open()
        try:
            page = await journal.list_signals(service=args.service, limit=args.limit)
        finally:
            await journal.close()
        return list(page.items)

    items = asyncio.run(fetch())
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
