"""``remediator journal copy``: move the journal from SQLite to PostgreSQL, history and
all (docs/operations.md, "SQLite or PostgreSQL")."""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime
from pathlib import Path

from pydantic import SecretStr

from remediator.cli.common import EXIT_USAGE, CliError, with_examples
from remediator.settings import load_settings

__all__ = ["register"]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    examples = with_examples(
        """\
        remediator journal copy --from sqlite:///var/remediator.db   # to the configured journal.url
        REMEDIATOR_JOURNAL__URL_FILE=/run/secrets/pg-url \\
            remediator journal copy --from sqlite:////var/lib/remediator/journal.db
        """
    )
    journal = sub.add_parser(
        "journal",
        help="Move the journal from SQLite to PostgreSQL.",
        epilog=examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    journal_sub = journal.add_subparsers(dest="journal_command", metavar="SUBCOMMAND",
                                         required=True)  # fmt: skip
    copy = journal_sub.add_parser(
        "copy",
        help="Copy a SQLite journal's history into an empty PostgreSQL journal.",
        description="Copy every signal (in its order), decision, remediation with its steps "
        "and approvals, outbox message (published or not), the decision cursor and the "
        "circuit from a SQLite journal into an empty PostgreSQL journal, in one transaction, "
        "then check the counts. Stop the daemon (every replica) first: the copy refuses a "
        "source with a recent heartbeat or one written while it ran, and a target that is "
        "not empty.",
        epilog=examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    copy.add_argument(
        "--from", dest="source", required=True, metavar="sqlite:///PATH",
        help="The SQLite journal (read only; never changed).",
    )  # fmt: skip
    copy.add_argument(
        "--to", dest="target", metavar="postgresql://...",
        help="The PostgreSQL journal (default: the configured journal.url, e.g. from "
        "REMEDIATOR_JOURNAL__URL_FILE: a URL here with a password is visible in ps).",
    )  # fmt: skip
    copy.add_argument("--config", type=Path, metavar="FILE", help="YAML settings file.")
    copy.add_argument(
        "--ignore-heartbeat", action="store_true",
        help="Copy although the source's last heartbeat is under a minute old (only when "
        "the daemon is certainly stopped).",
    )  # fmt: skip
    copy.set_defaults(func=cmd_copy)


def cmd_copy(args: argparse.Namespace) -> int:
    # Only the journal modules this command needs (asyncpg among them).
    from remediator.journal.copy import copy_journal
    from remediator.journal.postgres import redact

    source = _sqlite_path(args.source)
    target = _target(args)
    print(f"copying {source} into {redact(target)}", flush=True)
    report = asyncio.run(
        copy_journal(
            source=source, target=target, progress=_Progress(), now=datetime.now(UTC),
            ignore_heartbeat=args.ignore_heartbeat,
        )
    )  # fmt: skip
    print(f"done: schema {report.version} copied and checked")
    for name, count in report.counts.items():
        if name != "circuit changes":
            print(f"  {name:<18} {count}")
    print(f"  {'circuit':<18} {'open' if report.circuit_open else 'closed'}")
    print(f"Now run every replica with journal.url set to {redact(target)}.")
    return 0


def _sqlite_path(url: str) -> Path:
    if not url.startswith("sqlite:///"):
        raise CliError("--from: a SQLite journal URL (sqlite:///PATH)", code=EXIT_USAGE)
    return Path(url.removeprefix("sqlite:///"))


def _target(args: argparse.Namespace) -> SecretStr:
    if args.target:
        target = SecretStr(args.target)
    else:
        target = load_settings(config_file=args.config).journal.url
    if not target.get_secret_value().startswith(POSTGRES_SCHEMES):
        where = "--to" if args.target else "journal.url (no --to given)"
        raise CliError(f"{where}: a PostgreSQL journal URL (postgresql://...)", code=EXIT_USAGE)
    return target


class _Progress:
    """One line per table as it starts and ends, and at each tenth of a large one."""

    def __init__(self) -> None:
        self._shown: dict[str, int] = {}

    def __call__(self, table: str, done: int, total: int) -> None:
        tenth = 10 if done >= total else done * 10 // total
        if self._shown.get(table) == tenth:
            return
        self._shown[table] = tenth
        print(f"  {table}: {done} of {total}", flush=True)
