"""``record edit``: write the root cause, improvements and lessons of a rollback record.

Over the daemon's API only (``PATCH /api/v1/remediations/{id}/record``, role operate):
the editor recorded is the principal of the credential sent, never a flag.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from typing import Any

import orjson

from remediator.cli.api import ApiClient, add_api_flags, api_options
from remediator.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    add_output_option,
    with_examples,
)

__all__ = ["register"]

EXAMPLES = """\
remediator record edit rem_0123abcd --root-cause "v1.4.1 shipped a broken pool size" \\
    --improvements "canary checks the pool" --improvements "alert on pool waits" \\
    --lessons "roll back first, debug later"
remediator record edit rem_0123abcd --lessons   # clears the lessons
"""
NOTES = """\
Fields not given keep their value; a list flag given without values clears the list.
exit codes: 0 done; 2 a usage mistake or a refused request (400, 401, 403, 404);
3 the daemon is unreachable or unavailable.
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "record", help="Edit the analysis of a rollback record.",
        epilog=with_examples(EXAMPLES), formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    actions = parser.add_subparsers(dest="record_command", metavar="ACTION", required=True)
    edit = actions.add_parser(
        "edit",
        help="Set root cause, improvements and lessons of a remediation's record.",
        description=textwrap.fill(
            "Writes the analysis part of the rollback record (plan 3.11) through the "
            "daemon's API (--url): it needs the 'operate' role. Every edit is journaled "
            "with its editor and time.",
            width=88,
        ),
        epilog=with_examples(EXAMPLES, notes=NOTES),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    edit.add_argument("id", help="The remediation id (rem_...).")
    edit.add_argument("--root-cause", help="What caused the incident.")
    edit.add_argument(
        "--improvements", nargs="*", action="extend", metavar="TEXT",
        help="One improvement per value (repeatable).",
    )  # fmt: skip
    edit.add_argument(
        "--lessons", nargs="*", action="extend", metavar="TEXT",
        help="One lesson learned per value (repeatable).",
    )  # fmt: skip
    add_api_flags(edit)
    add_output_option(edit, "the API's answer: the record's analysis")
    edit.set_defaults(func=cmd_record_edit)


def edit_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if args.root_cause is not None:
        body["root_cause"] = args.root_cause
    for field in ("improvements", "lessons"):
        value = getattr(args, field)
        if value is not None:
            body[field] = list(value)
    return body


def cmd_record_edit(args: argparse.Namespace) -> int:
    options = api_options(args, os.environ)
    if options is None:
        raise CliError(
            "record edit asks the running daemon: give --url or set $REMEDIATOR_URL",
            code=EXIT_USAGE,
        )
    body = edit_body(args)
    if not body:
        raise CliError(
            "give at least one of --root-cause, --improvements, --lessons", code=EXIT_USAGE
        )
    answer = ApiClient(options).patch_json(f"/api/v1/remediations/{args.id}/record", body)
    if args.output == "json":
        sys.stdout.write(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode() + "\n")
        return EXIT_OK
    print(f"record of {args.id} edited by {answer.get('edited_by')} at {answer.get('edited_at')}")
    return EXIT_OK
