"""``remediator run``: the daemon."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from remediator.cli.common import add_settings_flags, settings_of, with_examples
from remediator.logs import configure_logging
from remediator.settings import DEFAULT_LISTEN

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser(
        "run",
        help="Run the daemon.",
        description="Run the daemon: serve the webhook, API, /healthz, /readyz and /metrics. "
        "SIGTERM drains: new webhooks get 503, in-flight ones finish, then it exits 0.",
        epilog=with_examples(
            """\
            remediator run                    # 127.0.0.1:9095, journal var/remediator.db
            REMEDIATOR_WEBHOOK_TOKEN_FILE=/run/secrets/token remediator run --listen 0.0.0.0:9095
            remediator run --config /etc/remediator/config.yaml --dry-run --log-format json
            """,
            notes="Every setting: docs/configuration.md (remediator config doc).",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_settings_flags(run)
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


def cmd_run(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    configure_logging(fmt=settings.log.format, level=settings.log.level)
    # uvloop: about 15% more webhook throughput measured on our machines (bench/intake.py).
    import uvloop

    from remediator.runtime import Runtime  # heavy imports only for the daemon

    uvloop.install()
    return asyncio.run(Runtime(settings).run())
