"""``remediator db ...``: operator commands for a service's database (PostgreSQL).

Every command reads the service's ``database`` block from the catalog (``--rules``),
so it acts exactly as the daemon would: same DSN source, migration runner, backup
directory and integrity queries. ``revert`` and ``restore`` hold the service's
PostgreSQL advisory lock, the one the daemon's database steps hold: an automatic revert
and a manual one never run at once (the second is refused with who holds the lock, or
waits the service's ``lock_wait``).

``revert`` always backs up (and verifies the backup) first; ``restore`` backs up the
current state first too, so a restore can itself be undone.

Journal: each revert/restore (and dry run) is recorded in the journal as a manual
signal (``db.revert`` / ``db.restore``) holding the outcome, the backup and the actor,
so ``remediator signals`` shows who did what. It is not yet a remediation with a step
timeline (see docs/database.md, "Operator CLI").
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from remediator.cli.common import add_output_option, json_output, with_examples
from remediator.connectors.postgres import (
    BASE,
    ServiceLocks,
    backup_retention,
    list_backups,
    restore_database,
    restore_table,
    revert_with_backup,
)
from remediator.connectors.postgres.steps import DEFAULT_BACKUP_ROOT, ServiceDatabase, revert_target
from remediator.domain.errors import RemediatorError
from remediator.domain.lifecycle import RemediationStatus
from remediator.domain.retention import backups_in_use
from remediator.domain.signals import Signal, Source, Status
from remediator.journal import journal_from_url
from remediator.rulefiles import load_rule_pack_from_path
from remediator.runtime.retention import open_remediations
from remediator.settings import Settings, load_settings

__all__ = ["register"]

NOTES = """\
The DSN comes from the catalog's dsn_env / dsn_file / dsn_secret and is never printed.
Exit codes: 0 done, 1 failed (nothing changed unless said), 2 bad request or settings,
3 reverted but validation failed (a person must look), 4 busy (another revert holds the
service's lock).
"""
RESTORE = "remediator db restore checkout --backup 20261127T093012123456Z-checkout-4f2a9c"
EXAMPLES = {
    "status": "remediator db status checkout\nremediator db status checkout --output json\n",
    "revert": """\
remediator db revert checkout --dry-run          # what would be reverted, nothing changes
remediator db revert checkout                    # back up, revert the last migration
remediator db revert checkout --to 004           # back up, revert down to 004_* (or "base")
""",
    "backups": "remediator db backups checkout\nremediator db backups checkout --output json\n",
    "restore": f"{RESTORE}\n{RESTORE} --table orders\n",
}
EPILOG = with_examples("".join(EXAMPLES.values()), notes=NOTES)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NEEDS_HUMAN, EXIT_BUSY = 0, 1, 2, 3, 4


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = subparsers.add_parser(
        "db",
        help="status, revert, backups and restore of a service's database",
        description=__doc__.split("\n\n")[1].replace("``", "") if __doc__ else None,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = db.add_subparsers(dest="db_command", metavar="SUBCOMMAND", required=True)

    status = commands.add_parser(
        "status",
        help="migration state: applied, pending, unknown; newest backup",
        epilog=with_examples(EXAMPLES["status"], notes=NOTES),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(status)
    status.set_defaults(func=cmd_status)

    revert = commands.add_parser(
        "revert",
        help="back up, then revert the last migration (or down to --to), then validate",
        epilog=with_examples(EXAMPLES["revert"], notes=NOTES),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(revert)
    revert.add_argument(
        "--to", metavar="VERSION", help='end at this version ("004", "004_name" or "base")'
    )
    revert.add_argument(
        "--dry-run", action="store_true", help="show what would be reverted; change nothing"
    )
    revert.set_defaults(func=cmd_revert)

    backups = commands.add_parser(
        "backups",
        help="list the service's verified backups",
        epilog=with_examples(EXAMPLES["backups"], notes=NOTES),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(backups)
    backups.set_defaults(func=cmd_backups)

    restore = commands.add_parser(
        "restore",
        help="restore the whole database, or one table's rows, from a backup",
        epilog=with_examples(EXAMPLES["restore"], notes=NOTES),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(restore)
    restore.add_argument("--backup", required=True, metavar="ID", help="see `db backups`")
    restore.add_argument(
        "--table", metavar="T", help="only this table's rows ([schema.]table); else everything"
    )
    restore.set_defaults(func=cmd_restore)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("service", metavar="SERVICE", help="a service of the catalog")
    parser.add_argument("--config", type=Path, metavar="FILE", help="YAML settings file.")
    parser.add_argument(
        "--journal", metavar="URL", help="Journal location (sqlite:///PATH or postgresql://...)."
    )
    parser.add_argument("--rules", metavar="PATH", help="Rule files (catalog) directory.")
    parser.add_argument(
        "--backup-root",
        type=Path,
        metavar="DIR",
        default=None,
        help="Backups of services without backup_dir (default: the database.backup_root "
        f"setting, {DEFAULT_BACKUP_ROOT}).",
    )
    add_output_option(parser, "the record as one JSON object")


# -- plumbing -------------------------------------------------------------------------


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if args.journal:
        overrides["journal"] = {"url": args.journal}
    if args.rules:
        overrides["rules_path"] = args.rules
    if args.backup_root:
        overrides["database"] = {"backup_root": args.backup_root}
    return load_settings(config_file=args.config, overrides=overrides)


def _database(args: argparse.Namespace, settings: Settings) -> ServiceDatabase:
    pack = load_rule_pack_from_path(settings.rules_path)
    # dsn_secret is read through the Kubernetes API by the daemon; from a workstation the
    # DSN comes from dsn_env/dsn_file (mount or export it) until the CLI gets a kube client.
    return ServiceDatabase.from_pack(pack, args.service, backup_root=settings.database.backup_root)


def _print(args: argparse.Namespace, record: dict[str, Any], text: str) -> None:
    if json_output(args):
        print(json.dumps(record, indent=2, sort_keys=True, default=str))
    else:
        print(text)


def _fail(message: str, code: int = EXIT_FAILED) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _code_of(exc: RemediatorError) -> int:
    from remediator.connectors.postgres.errors import RevertBusy
    from remediator.domain.errors import ConfigError

    if isinstance(exc, RevertBusy):
        return EXIT_BUSY
    if isinstance(exc, ConfigError):
        return EXIT_USAGE
    return EXIT_FAILED


async def _journal(
    settings: Settings, *, kind: str, db: ServiceDatabase, labels: dict[str, str], message: str
) -> str | None:
    """Record the manual action as a signal; returns a warning instead of failing the
    command (the database action already happened; its record is printed anyway)."""
    journal = journal_from_url(settings.journal.url)
    now = datetime.now(UTC)
    signal = Signal(
        key=f"cli\x1f{kind}\x1f{uuid.uuid4().hex}",
        source=Source.MANUAL,
        kind=kind,
        status=Status.EVENT,
        service=db.service,
        namespace=db.spec.namespace,
        labels={"service": db.service, "namespace": db.spec.namespace, **labels},
        annotations={"message": message[:2000]},
        starts_at=now,
        ends_at=None,
        received_at=now,
    )
    try:
        await journal.open()
        try:
            await journal.record_signals([signal])
        finally:
            await journal.close()
    except RemediatorError as exc:
        return f"warning: not journaled: {exc}"
    return None


def _actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


# -- commands -------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    return asyncio.run(_status(args))


async def _status(args: argparse.Namespace) -> int:
    try:
        db = _database(args, _settings(args))
        runner = db.runner(await db.dsn())
        status = await runner.status()
    except RemediatorError as exc:
        return _fail(str(exc), _code_of(exc))
    found = list_backups(db.backup_dir, db.service)
    record = {
        "service": db.service,
        "status": status.to_record(),
        "latest_backup": found[0].to_record() if found else None,
    }
    lines = [
        f"{db.service}: {status.kind} runner, at {status.current or BASE}",
        f"  applied: {', '.join(status.applied) or '-'}",
        f"  pending: {', '.join(status.pending) or '-'}",
    ]
    if status.unknown:
        lines.append(f"  unknown (in the database, not in the code): {', '.join(status.unknown)}")
    lines.append(
        f"  latest backup: {found[0].id} ({found[0].started_at:%Y-%m-%d %H:%M:%S %Z})"
        if found
        else "  latest backup: none"
    )
    _print(args, record, "\n".join(lines))
    return EXIT_OK


def cmd_revert(args: argparse.Namespace) -> int:
    return asyncio.run(_revert(args))


async def _revert(args: argparse.Namespace) -> int:
    try:
        settings = _settings(args)
        db = _database(args, settings)
        dsn = await db.dsn()
        runner = db.runner(dsn)
        if args.dry_run:
            before = await runner.status()
            if args.to:
                try:
                    target = before.find(args.to)
                except LookupError as exc:
                    return _fail(f"--to {args.to}: {exc}", EXIT_USAGE)
                if target is not None and target not in before.applied:
                    return _fail(f"--to {args.to}: {target} is not applied", EXIT_USAGE)
                planned = before.after(target)
            else:
                target, needed = revert_target(before, None)
                planned = before.after(target) if needed else ()
            record = {
                "dry_run": True,
                "service": db.service,
                "status": before.to_record(),
                "target": target or BASE,
                "would_revert": list(planned),
            }
            text = (
                f"dry run: {db.service} is at {before.current or BASE}; would back up, then "
                f"revert {', '.join(planned) or 'nothing'} to end at {target or BASE}"
            )
            _print(args, record, text)
            warning = await _journal(
                settings,
                kind="db.revert",
                db=db,
                labels={"dry_run": "true", "actor": _actor(), "to": target or BASE},
                message=text,
            )
            if warning:
                print(warning, file=sys.stderr)
            return EXIT_OK
        outcome = await revert_with_backup(
            service=db.service,
            runner=runner,
            dsn=dsn,
            backup_dir=db.backup_dir,
            target=args.to,
            locks=ServiceLocks(),  # this process; the advisory lock covers the daemon
            lock_wait_s=db.lock_wait_s,
            integrity_queries=db.integrity_queries,
            clock=lambda: datetime.now(UTC),
            backup_timeout_s=db.database.backup_timeout.total_seconds(),
        )
    except RemediatorError as exc:
        return _fail(f"revert not started, nothing changed: {exc}", _code_of(exc))
    record = outcome.to_record()
    lines = [
        f"{db.service}: revert {outcome.status.value}",
        f"  backup: {outcome.backup.id} ({outcome.backup.size_bytes} bytes, sha256 "
        f"{outcome.backup.sha256[:12]}, {outcome.backup.duration_s:.1f}s)"
        if outcome.backup
        else f"  backup: none ({outcome.backup_error})",
        f"  reverted: {', '.join(outcome.reverted) or 'nothing'}",
        f"  now at: {(outcome.after.current if outcome.after else None) or BASE}",
    ]
    if outcome.validation is not None:
        lines += [
            f"  check {c.name}: {'ok' if c.passed else 'FAILED'} {c.detail}".rstrip()
            for c in outcome.validation.checks
        ]
    if outcome.error:
        lines.append(f"  error: {outcome.error}")
    text = "\n".join(lines)
    _print(args, record, text)
    warning = await _journal(
        settings,
        kind="db.revert",
        db=db,
        labels={
            "actor": _actor(),
            "outcome": outcome.status.value,
            "to": outcome.target or BASE,
            "backup": outcome.backup.id if outcome.backup else "",
            "reverted": ",".join(outcome.reverted),
        },
        message=text,
    )
    if warning:
        print(warning, file=sys.stderr)
    exits = {RemediationStatus.SUCCEEDED: EXIT_OK, RemediationStatus.NEEDS_HUMAN: EXIT_NEEDS_HUMAN}
    return exits.get(outcome.status, EXIT_FAILED)


def cmd_backups(args: argparse.Namespace) -> int:
    return asyncio.run(_backups(args))


async def _backups(args: argparse.Namespace) -> int:
    try:
        settings = _settings(args)
        db = _database(args, settings)
    except RemediatorError as exc:
        return _fail(str(exc), _code_of(exc))
    policy = settings.retention.backup_policy()
    in_use, warning = await _backups_in_use(settings)
    plan = backup_retention(db.backup_dir, db.service, policy=policy, now=datetime.now(UTC),
                            in_use=in_use)  # fmt: skip
    lines = [
        f"{db.service}: {len(plan.judged)} backup(s) in {db.backup_dir / db.service}; "
        f"retention keeps the newest {policy.keep_newest}, those younger than "
        f"{policy.keep_days:g} days and those a remediation not over needs"
    ]
    lines += [
        f"  {b.id}  {b.started_at:%Y-%m-%d %H:%M:%S}  {b.size_bytes:>12} bytes  "
        f"{b.duration_s:6.1f}s  sha256 {b.sha256[:12]}  db {b.database}  {verdict.value}"
        for b, verdict in plan.judged
    ]
    lines += [f"  leftover {path.name}: prune" for path in plan.leftovers]
    record = {
        "service": db.service,
        "backups": [{**b.to_record(), "retention": verdict.name.lower()}
                    for b, verdict in plan.judged],
        "retention": {"keep_newest": policy.keep_newest, "keep_days": policy.keep_days,
                      "leftovers": [p.name for p in plan.leftovers]},
    }  # fmt: skip
    _print(args, record, "\n".join(lines))
    if warning:
        print(warning, file=sys.stderr)
    return EXIT_OK


async def _backups_in_use(settings: Settings) -> tuple[set[str], str | None]:
    """Ids of the backups remediations not over need, or none and a warning when the
    journal cannot say (the daemon then prunes no backup at all in that round)."""
    journal = journal_from_url(settings.journal.url)
    try:
        await journal.open()
        try:
            return backups_in_use(await open_remediations(journal)), None
        finally:
            await journal.close()
    except RemediatorError as exc:
        return set(), f"warning: the journal cannot say which backups are in use: {exc}"


def cmd_restore(args: argparse.Namespace) -> int:
    return asyncio.run(_restore(args))


async def _restore(args: argparse.Namespace) -> int:
    clock = lambda: datetime.now(UTC)  # noqa: E731 - a one-line clock
    try:
        settings = _settings(args)
        db = _database(args, settings)
        chosen = next((b for b in list_backups(db.backup_dir, db.service) if b.id == args.backup),
                      None)  # fmt: skip
        if chosen is None:
            return _fail(
                f"no backup {args.backup!r} of {db.service} (see `db backups`)", EXIT_USAGE
            )
        schema, _, table = (args.table or "").rpartition(".")
        dsn = await db.dsn()
        async with db.locked(dsn, ServiceLocks(), purpose=f"manual restore by {_actor()}"):
            # The current state first: a restore overwrites it, and may itself be regretted.
            safety = await db.take_backup(dsn, clock=clock)
            if args.table:
                restored = await restore_table(
                    dsn=dsn, backup=chosen, table=table, schema=schema or "public"
                )
            else:
                restored = await restore_database(dsn=dsn, backup=chosen)
    except RemediatorError as exc:
        return _fail(f"restore failed, nothing changed: {exc}", _code_of(exc))
    what = f"table {restored.table}" if restored.table else f"database {restored.database}"
    record = {
        "service": db.service,
        "restored": {
            "kind": restored.kind,
            "backup": chosen.to_record(),
            "database": restored.database,
            "table": restored.table,
            "duration_s": round(restored.duration_s, 3),
        },
        "backup_before_restore": safety.to_record(),
    }
    text = (
        f"{db.service}: restored {what} from backup {chosen.id} in {restored.duration_s:.1f}s\n"
        f"  the state before the restore is backup {safety.id}"
    )
    _print(args, record, text)
    warning = await _journal(
        settings,
        kind="db.restore",
        db=db,
        labels={
            "actor": _actor(),
            "outcome": RemediationStatus.SUCCEEDED.value,
            "backup": chosen.id,
            "table": restored.table or "",
            "backup_before_restore": safety.id,
        },
        message=text,
    )
    if warning:
        print(warning, file=sys.stderr)
    return EXIT_OK
