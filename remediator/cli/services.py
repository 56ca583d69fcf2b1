"""``services``: the catalog's services with their automation level (the trust ladder),
its last change, and what the last 30 days of remediations came to.

Over the daemon's API only: the level a service runs at is the running daemon's
catalog, and the history is its journal.
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
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    CliError,
    add_output_option,
    json_output,
    with_examples,
)

__all__ = ["register"]

EXAMPLES = with_examples(
    """\
    remediator services --url https://remediator.example:9095 --token-file ~/.remediator-token
    REMEDIATOR_URL=https://remediator.example:9095 remediator services --output json
    """,
    notes="""\
    columns: LEVEL is what the daemon acts on (notify: decides and tells; approve: every
    automatic plan waits for approval; auto: acts). PLANS, OK, FAILED, HUMAN count plans of
    the last 30 days (needs_human in HUMAN); WOULD counts plans the notify level kept to a
    notice; MTTR is the median time from plan to success. CHANGED says when and from which
    rule files the level was last recorded as changed.

    exit codes: 0 done; 2 a usage mistake or a refused request (401, 403); 3 the daemon is
    unreachable or unavailable.
    """,
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "services",
        help="List the catalog's services: automation level and the last 30 days.",
        description=textwrap.fill(
            "Each service of the running daemon's catalog with its automation level, when "
            "and by what that level last changed, and its last 30 days: plans, succeeded, "
            "failed, needs_human, median time to recover. Promote a service (notify -> "
            "approve -> auto) on this evidence. Asks the daemon's API (--url): it needs "
            "the 'read' role.",
            width=88,
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_api_flags(parser)
    add_output_option(parser, "the API's document: {items: [...]}")
    parser.set_defaults(func=cmd_services)


def cmd_services(args: argparse.Namespace) -> int:
    options = api_options(args, os.environ)
    if options is None:
        raise CliError(
            "services asks the running daemon (its catalog and its journal): give --url "
            "or set $REMEDIATOR_URL",
            code=EXIT_USAGE,
        )
    body = ApiClient(options).get_json("/api/v1/services")
    items = body.get("items") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise CliError(f"{options.url} answered without a list of services", code=EXIT_UNAVAILABLE)
    if json_output(args):
        sys.stdout.write(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n")
        return EXIT_OK
    if not items:
        print("no services in the catalog")
        return EXIT_OK
    print(f"{'SERVICE':20} {'NAMESPACE':15} {'LEVEL':8} {'PLANS':>5} {'OK':>4} {'FAILED':>6} "
          f"{'HUMAN':>5} {'WOULD':>5} {'MTTR':>8}  CHANGED")  # fmt: skip
    for item in items:
        print(_row(item))
    return EXIT_OK


def _row(item: dict[str, Any]) -> str:
    days = item["last_30_days"]
    return (
        f"{item['service']:20} {item['namespace']:15} {item['automation']:8} "
        f"{days['plans']:>5} {days['succeeded']:>4} {days['failed']:>6} "
        f"{days['needs_human']:>5} {days['would_have_run']:>5} "
        f"{_duration(days['median_seconds_to_recover']):>8}  {_changed(item)}"
    )


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, rest = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{rest:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _changed(item: dict[str, Any]) -> str:
    change = item.get("automation_changed")
    if not change:
        return "-"
    since = f"{change['from']} -> {change['to']}" if change["from"] else f"{change['to']}"
    return f"{change['at']} {since} by {change['by']}"
