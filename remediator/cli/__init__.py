"""Command line: ``remediator COMMAND``; ``python -m remediator`` and the console script.

One module per group of commands, each with a ``register(subparsers)``:
``run`` (the daemon), ``config`` (show, schema, doc), ``operate`` (signals, remediations, history,
report, approve, circuit: over the API with ``--url``, or on the local journal),
``services`` (automation levels and 30 days of outcomes, over the API), ``rules`` (check,
explain), ``db`` (a service's database), ``auth`` (hash-token) and
``journal`` (copy: SQLite to PostgreSQL).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import remediator
from remediator.cli import (
    auth,
    config,
    db,
    journal,
    operate,
    record,
    requests,
    rules,
    run,
    services,
)
from remediator.cli.common import EXIT_FAILED, EXIT_USAGE, CliError, with_examples
from remediator.domain.errors import ConfigError, RemediatorError

__all__ = ["build_parser", "main"]

EPILOG = with_examples(
    """\
    remediator run                                  # 127.0.0.1:9095, journal var/remediator.db
    REMEDIATOR_WEBHOOK_TOKEN=s3cret remediator run --listen 0.0.0.0:9095
    remediator run --config /etc/remediator/config.yaml --dry-run
    remediator signals --service checkout --limit 20
    remediator remediations --status skipped        # what was decided, and why
    remediator remediations rem_0123abcd            # one decision in full
    remediator history --service checkout           # what was done, step by step
    remediator config show                          # effective settings, secrets masked
    remediator rules check rules/                   # validate rule files, exit 1 on problems
    remediator rules explain --rules rules/ --alert alert.json
    remediator auth hash-token < alice.token        # the line for a principals file
    remediator journal copy --from sqlite:///var/remediator.db   # to the configured PostgreSQL

    # against a running daemon, as your principal (no shell in the pod needed):
    export REMEDIATOR_URL=https://remediator.example:9095
    export REMEDIATOR_TOKEN_FILE=~/.config/remediator/token   # never a --token flag
    remediator remediations --status awaiting_approval
    remediator approve rem_0123abcd --comment "checked with the checkout team"
    remediator circuit reset                        # close the circuit breaker
    remediator services --output json               # automation levels, last 30 days
    """,
    notes="""\
    Without --url / $REMEDIATOR_URL, signals, remediations, history, report, approve and
    circuit read the local journal file (break-glass: approvals and resets there record
    the local OS user). Every listing takes --output json (-o json).

    Every setting can also come from the environment (REMEDIATOR_ prefix, __ between
    nested names, e.g. REMEDIATOR_HTTP__BODY_LIMIT_BYTES) or from the --config YAML
    file. Flags beat the environment, which beats the file. All settings:
    docs/configuration.md (remediator config doc).
    """,
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
    run.register(sub)
    operate.register(sub)
    requests.register(sub)
    services.register(sub)
    record.register(sub)
    config.register(sub)
    rules.register(sub)
    db.register(sub)
    auth.register(sub)
    journal.register(sub)
    version = sub.add_parser(
        "version",
        help="Print the version.",
        epilog=with_examples("remediator version"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    version.set_defaults(func=cmd_version)
    return parser


def cmd_version(args: argparse.Namespace) -> int:
    print(f"remediator {remediator.__version__} (Python {sys.version.split()[0]})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except CliError as exc:
        print(f"remediator: {exc.message}", file=sys.stderr)
        return exc.code
    except ConfigError as exc:
        print(f"remediator: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RemediatorError as exc:
        print(f"remediator: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    return code
