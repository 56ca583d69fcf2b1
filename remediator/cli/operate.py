"""``signals``, ``remediations``, ``history``, ``report``, ``approve``, ``circuit``.

What operators read and do, written once for both places they can do it from
(:mod:`remediator.cli.backends`): the running daemon's API with ``--url`` (as the
principal of their credential), or the local journal file (break-glass: a shell in
the pod; writes there record the local OS user).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson

from remediator.cli.api import add_api_flags, api_options
from remediator.cli.backends import ApiBackend, Backend, JournalBackend, collect, local_user
from remediator.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    add_output_option,
    add_settings_flags,
    json_output,
    positive_int,
    settings_of,
    with_examples,
)
from remediator.domain.lifecycle import RemediationStatus

__all__ = ["register"]

MAX_BY_CHARS = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

WHERE = textwrap.dedent(
    """\
    where it runs:
      With --url (or $REMEDIATOR_URL) the command asks the running daemon's API as the
      principal of the credential in --token-file, $REMEDIATOR_TOKEN_FILE or
      $REMEDIATOR_TOKEN. Without, it reads the local journal file (--journal, --config,
      default var/remediator.db): a shell inside the pod, break-glass.

    exit codes: 0 done; 1 no such remediation, or not in that state; 2 a usage mistake
    or a refused request (401, 403, other 4xx); 3 the daemon is unreachable or
    unavailable (5xx; 503 says when to retry).
    """
)


def _parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    *,
    help: str,
    description: str,
    examples: str,
) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        name,
        help=help,
        description=textwrap.fill(description, width=88),
        epilog=with_examples(examples, notes=WHERE),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_settings_flags(parser)
    add_api_flags(parser)
    return parser


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    signals = _parser(
        sub,
        "signals",
        help="List journaled signals, newest first.",
        description="List journaled signals.",
        examples="""\
        remediator signals --service checkout --limit 20
        remediator signals --url https://remediator.example:9095 --token-file ~/.remediator-token
        REMEDIATOR_URL=https://remediator.example:9095 remediator signals --limit 5000 -o json
        """,
    )
    signals.add_argument("--service", help="Only this service.")
    signals.add_argument(
        "--limit", type=positive_int, default=20, help="How many (default 20; paged)."
    )
    add_output_option(signals, "one JSON object per signal, a line each")
    signals.set_defaults(func=cmd_signals)

    rems = _parser(
        sub,
        "remediations",
        help="List decisions that opened or skipped a remediation, newest first.",
        description="List remediations (planned, dry-run, skipped with reason, ...), or show "
        "one with its full decision and explanation.",
        examples="""\
        remediator remediations --status skipped        # what was decided, and why
        remediator remediations rem_0123abcd            # one decision in full
        remediator remediations --url https://remediator.example:9095 --status awaiting_approval
        remediator remediations --service checkout --output json | jq -r .id
        """,
    )
    rems.add_argument("id", nargs="?", help="Show this remediation in full.")
    rems.add_argument("--service", help="Only this service.")
    rems.add_argument("--status", help="Only this status (planned, dry-run, skipped, ...).")
    rems.add_argument("--limit", type=positive_int, default=20, help="How many (default 20).")
    add_output_option(rems, "one JSON object per remediation, a line each; one id: the record")
    rems.set_defaults(func=cmd_remediations)

    history = _parser(
        sub,
        "history",
        help="Show remediations with their step-by-step timeline.",
        description="The timeline of remediations: when each was decided, claimed, every "
        "step started and finished (with what it changed or why it failed), and the end.",
        examples="""\
        remediator history --service checkout
        remediator history rem_0123abcd --url https://remediator.example:9095
        remediator history --service checkout --output json
        """,
    )
    history.add_argument("id", nargs="?", help="One remediation (default: the newest ones).")
    history.add_argument("--service", help="Only this service.")
    history.add_argument("--limit", type=positive_int, default=5, help="How many (default 5).")
    add_output_option(history, "one JSON object per remediation with its steps, a line each")
    history.set_defaults(func=cmd_history)

    report = _parser(
        sub,
        "report",
        help="Print the rollback record of a remediation.",
        description="Print the rollback record (basic facts, timeline, results, impact, and "
        "root cause / improvements / lessons to fill in) as Markdown, HTML or JSON.",
        examples="""\
        remediator report rem_0123abcd > rem_0123abcd.md
        remediator report rem_0123abcd --journal sqlite:///var/remediator.db --rules rules/
        remediator report rem_0123abcd --format html --url https://remediator.example:9095
        """,
    )
    report.add_argument("id", help="Remediation id (see `remediator remediations`).")
    report.add_argument("--format", choices=["md", "html", "json"], default="md")
    report.add_argument(
        "--rules", metavar="PATH",
        help="Rule files (catalog) directory, for the service's owner when the record is "
        "read from the journal file (default: rules_path). Over the API the daemon's is used.",
    )  # fmt: skip
    report.set_defaults(func=cmd_report)

    approve = _parser(
        sub,
        "approve",
        help="Approve a plan whose rule requires approval.",
        description="Rules may require approval (the manual scenarios do). Such plans wait "
        "as awaiting_approval until every approver role the rule names has approved, each "
        "by a different principal and never the requester. Over the API (--url) the "
        "approver is the principal of your credential (it needs the 'operate' role and one "
        "of the plan's approver roles), with an optional --comment. On the local journal "
        "file it is break-glass: the plan becomes runnable at once, and the approver "
        "recorded is the local OS user (with --by as a name given alongside).",
        examples="""\
        remediator approve rem_0123abcd --url https://remediator.example:9095 \\
            --token-file ~/.remediator-token --comment "checked with the checkout team"
        remediator approve rem_0123abcd             # break-glass, inside the pod
        """,
    )
    approve.add_argument("id", help="Remediation id (see `remediator remediations`).")
    approve.add_argument("--comment", help="Why, recorded with the approval (over the API only).")
    approve.add_argument(
        "--by",
        help="Local journal only: a name recorded next to the local OS user. Over the API "
        "the approver is your credential's principal.",
    )
    approve.set_defaults(func=cmd_approve)

    circuit = sub.add_parser(
        "circuit",
        help="Show or reset the global circuit breaker.",
        description="While the breaker is open, rules only notify. It opens after too many "
        "automated actions in a window or too many failed remediations in a row; only a "
        "reset closes it.",
        epilog=with_examples(
            """\
            remediator circuit status --url https://remediator.example:9095
            remediator circuit reset --url https://remediator.example:9095
            """
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    circuit_sub = circuit.add_subparsers(
        dest="circuit_command", metavar="SUBCOMMAND", required=True
    )
    status = _parser(
        circuit_sub,
        "status",
        help="Show the breaker.",
        description="Show the breaker: open or closed, why, since when.",
        examples="""\
        remediator circuit status
        remediator circuit status --url https://remediator.example:9095
        remediator circuit status --output json
        """,
    )
    add_output_option(status, "the breaker as one JSON object")
    status.set_defaults(func=cmd_circuit)
    reset = _parser(
        circuit_sub,
        "reset",
        help="Close the breaker.",
        description="Close the breaker; automated actions before now no longer count toward "
        "it. Over the API it needs the 'operate' role; on the local journal file it is "
        "break-glass and records the local OS user.",
        examples="""\
        remediator circuit reset --url https://remediator.example:9095 \\
            --token-file ~/.remediator-token
        remediator circuit reset                    # break-glass, inside the pod
        """,
    )
    reset.set_defaults(func=cmd_circuit)


# -- where --------------------------------------------------------------------------------


@contextmanager
def opened_backend(args: argparse.Namespace) -> Iterator[Backend]:
    """The API when ``--url``/``$REMEDIATOR_URL`` says so, else the local journal file."""
    options = api_options(args, os.environ)
    if options is not None:
        if getattr(args, "by", None):
            raise CliError(
                "--by applies to the local journal only: over the API the approver is the "
                "principal of your credential",
                code=EXIT_USAGE,
            )
        with ApiBackend.opened(options) as api:
            yield api
        return
    if getattr(args, "comment", None) is not None:
        raise CliError("--comment is recorded over the API only (give --url)", code=EXIT_USAGE)
    actor = local_actor(getattr(args, "by", None))
    settings = settings_of(args)
    with JournalBackend.opened(
        settings.journal.url, actor=actor, rules_path=settings.rules_path
    ) as journal:
        yield journal


def local_actor(by: str | None) -> str:
    """Who a break-glass write records: the OS user, and the name given with --by."""
    user = f"local:{local_user()}"
    if by is None:
        return user
    by = by.strip()
    if not by or len(by) > MAX_BY_CHARS or _CONTROL.search(by):
        raise CliError(
            f"--by: a name of 1 to {MAX_BY_CHARS} characters, no control characters",
            code=EXIT_USAGE,
        )
    return f"{by} ({user})"


def break_glass(backend: Backend, what: str) -> None:
    if isinstance(backend, JournalBackend):
        print(
            f"remediator: break-glass: {what} in the journal file directly, not through the "
            f"daemon's API. Recorded as who did it: {backend.actor}, the local OS user, not "
            "an authenticated principal. Use --url to act as your principal.",
            file=sys.stderr,
        )


# -- commands ---------------------------------------------------------------------------


def _json_lines(items: list[dict[str, Any]]) -> None:
    for item in items:
        sys.stdout.write(orjson.dumps(item).decode() + "\n")


def cmd_signals(args: argparse.Namespace) -> int:
    with opened_backend(args) as backend:
        items = collect(
            lambda limit, cursor: backend.signals(service=args.service, limit=limit, cursor=cursor),
            args.limit,
        )
    if json_output(args):
        _json_lines(items)
        return EXIT_OK
    if not items:
        print("no signals journaled" + (f" for service {args.service}" if args.service else ""))
        return EXIT_OK
    print(f"{'RECEIVED':27} {'SOURCE':12} {'STATUS':8} {'SERVICE':20} {'NAMESPACE':15} KIND")
    for item in items:
        service = item["service"] or "(unroutable)"
        print(
            f"{item['received_at']:27} {item['source']:12} {item['status']:8} "
            f"{service:20} {item['namespace'] or '-':15} {item['kind']}"
        )
    return EXIT_OK


def cmd_remediations(args: argparse.Namespace) -> int:
    if args.id:
        with opened_backend(args) as backend:
            item = backend.remediation(args.id)
        if json_output(args):
            sys.stdout.write(orjson.dumps(item, option=orjson.OPT_INDENT_2).decode() + "\n")
        else:
            print(f"{item['id']}  {item['status']}  {item['service']}  rule={item['rule']}")
            print(f"created {item['created_at']}  signal {item['signal_id']}\n")
            print(item["explanation"])
        return EXIT_OK

    with opened_backend(args) as backend:
        items = collect(
            lambda limit, cursor: backend.remediations(
                service=args.service, status=args.status, limit=limit, cursor=cursor
            ),
            args.limit,
        )
    if json_output(args):
        _json_lines(items)
        return EXIT_OK
    if not items:
        print("no remediations")
        return EXIT_OK
    print(f"{'CREATED':27} {'ID':28} {'STATUS':9} {'SERVICE':16} {'ACTION':12} REASON")
    for item in items:
        print(
            f"{item['created_at']:27} {item['id']:28} {item['status']:9} {item['service']:16} "
            f"{item['action'] or '-':12} {item['reason'] or ''}"
        )
    return EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    with opened_backend(args) as backend:
        if args.id:
            items = [backend.remediation(args.id)]
        else:
            listed = collect(
                lambda limit, cursor: backend.remediations(
                    service=args.service, status=None, limit=limit, cursor=cursor
                ),
                args.limit,
            )
            items = [backend.remediation(i["id"]) for i in listed]
    if json_output(args):
        _json_lines(items)
        return EXIT_OK
    if not items:
        print("no remediations")
        return EXIT_OK
    for item in items:
        print(f"{item['id']}  {item['service']}  {item['action'] or '-'}  {item['status']}"
              + (f" ({item['reason']})" if item["reason"] else ""))  # fmt: skip
        print(f"  {item['created_at']}  decided by rule {item['rule']}")
        if item.get("approved_by"):
            roles = item.get("approved_as") or ()
            comment = item.get("approval_comment")
            print(f"  {item.get('approved_at') or ''}  approved by {item['approved_by']}"
                  + (f" as {', '.join(roles)}" if roles else "")
                  + (f": {comment}" if comment else ""))  # fmt: skip
        if item["claimed_at"]:
            print(f"  {item['claimed_at']}  claimed by {item['claimed_by']}")
        for step in item.get("steps", ()):
            detail = step["detail"].get("error") or step["detail"].get("summary") or ""
            print(f"  {step['finished_at'] or step['started_at']}  {step['kind']:<18} "
                  f"{step['status']:<9} {detail}")  # fmt: skip
        if item["finished_at"]:
            print(f"  {item['finished_at']}  finished: {item['status']}")
        print()
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    with opened_backend(args) as backend:
        text = backend.record(args.id, fmt=args.format)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return EXIT_OK


def cmd_approve(args: argparse.Namespace) -> int:
    with opened_backend(args) as backend:
        break_glass(backend, "approving")
        item = backend.approve(args.id, comment=args.comment)
    if item.get("status") == RemediationStatus.AWAITING_APPROVAL.value:
        # Recorded; other approver roles must approve too, each by someone else.
        missing = ", ".join((item.get("approval") or {}).get("missing") or ()) or "-"
        print(f"{args.id}: your approval is recorded; still needed: {missing}")
        return EXIT_OK
    by = item.get("approved_by") or "you"
    print(f"{args.id} approved by {by}: {item.get('action')} on {item.get('service')} will run")
    return EXIT_OK


def cmd_circuit(args: argparse.Namespace) -> int:
    with opened_backend(args) as backend:
        if args.circuit_command == "reset":
            break_glass(backend, "resetting the circuit breaker")
            state = backend.reset_circuit()
        else:
            state = backend.circuit()
    if json_output(args):
        sys.stdout.write(orjson.dumps(state, option=orjson.OPT_INDENT_2).decode() + "\n")
        return EXIT_OK
    print("circuit breaker " + ("OPEN: rules only notify" if state.get("open") else "closed"))
    if state.get("reason"):
        print(f"reason: {state['reason']}")
    if state.get("changed_at"):
        print(f"since: {state['changed_at']}")
    if state.get("changed_by"):
        print(f"by: {state['changed_by']}")
    return EXIT_OK
