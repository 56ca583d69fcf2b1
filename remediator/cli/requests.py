"""``request``, ``reject``, ``cancel``, ``review``, ``requests``: rollback requests and
their approvals (``approve`` is with the other operator commands).

Over the API (``--url``) each is the principal of the credential: the daemon checks the
request, the engine decides it, and every answer is journaled with who gave it and when.
On the local journal file only ``cancel`` (break-glass) and ``requests`` work.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from remediator.cli.backends import collect
from remediator.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    add_output_option,
    json_output,
)
from remediator.cli.operate import _parser, break_glass, opened_backend
from remediator.domain.approvals import SCENARIOS
from remediator.domain.lifecycle import RemediationStatus

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    request = _parser(
        sub,
        "request",
        help="Ask for a rollback of a service; it waits for its scenario's approvers.",
        description="Ask the daemon to roll a service back (plan 3.1.2). The scenario decides "
        "who must approve and how fast (the manual-* rules): every approver role by a "
        "different person, never you. --emergency needs one approver from "
        "approvals.emergency_approver_roles instead, and owes a review afterwards. Over the "
        "API only (--url).",
        examples="""\
        remediator request checkout --scenario severe_functional_defect \\
            --reason "card payments fail since 14:02" --url https://remediator.example:9095
        remediator request checkout --scenario data_consistency --target 41 --emergency \\
            --reason "orders written twice"
        """,
    )
    request.add_argument("service", help="A service of the catalog.")
    request.add_argument("--scenario", required=True, choices=SCENARIOS)
    request.add_argument("--reason", required=True, help="Why (at most 500 characters).")
    request.add_argument(
        "--target",
        help="The revision or version to return to, from the deploy history (default: the "
        "newest one recorded healthy).",
    )
    request.add_argument("--emergency", action="store_true", help="The emergency path.")
    request.add_argument(
        "--idempotency-key",
        help="Repeat the command with the same key after a timeout: it is the same request.",
    )
    request.set_defaults(func=cmd_request)

    for verb, what in (
        ("reject", "Reject a plan waiting for approval: it never runs."),
        ("cancel", "Withdraw your request (or, as an admin, any plan not yet started)."),
        ("review", "Close the review an approved emergency request owes."),
    ):
        parser = _parser(
            sub,
            verb,
            help=what,
            description=f"{what} Over the API (--url) as the principal of your credential"
            + (
                "; on the local journal file it is break-glass and records the local OS user."
                if verb == "cancel"
                else "."
            ),
            examples=f"""\
            remediator {verb} rem_0123abcd --comment "why" --url https://remediator.example:9095
            """,
        )
        parser.add_argument("id", help="Remediation id (see `remediator requests`).")
        parser.add_argument("--comment", help="Why, recorded with it (over the API only).")
        parser.set_defaults(func=cmd_answer, verb=verb)

    listing = _parser(
        sub,
        "requests",
        help="List plans waiting for approval: who asked, what is still needed, by when.",
        description="Plans awaiting approval (people's requests and alerts' plans), newest "
        "first, with the approver roles still missing and the response time.",
        examples="""\
        remediator requests --url https://remediator.example:9095
        remediator requests --service checkout --output json
        """,
    )
    listing.add_argument("--service", help="Only this service.")
    listing.add_argument("--limit", type=int, default=50, help="How many (default 50).")
    add_output_option(listing, "one JSON object per plan, a line each")
    listing.set_defaults(func=cmd_requests)


def cmd_request(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"service": args.service, "scenario": args.scenario,
                            "reason": args.reason, "emergency": args.emergency}  # fmt: skip
    if args.target is not None:
        body["target"] = args.target
    with opened_backend(args) as backend:
        status, item = backend.request(body, idempotency_key=args.idempotency_key)
    if status == 202:
        print(f"{item['id']}: requested; not decided yet (see `remediator remediations "
              f"{item['id']}`)")  # fmt: skip
        return EXIT_OK
    print(_summary(item))
    if item["status"] != RemediationStatus.AWAITING_APPROVAL.value:
        why = item.get("reason") or item["status"]
        print(f"not waiting for approval: {why}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_answer(args: argparse.Namespace) -> int:
    with opened_backend(args) as backend:
        if args.verb == "cancel":
            break_glass(backend, "cancelling")
        item = backend.answer(args.id, args.verb, comment=args.comment)
    if args.verb == "review":
        review = (item.get("approval") or {}).get("review") or {}
        print(f"{args.id}: emergency review closed by {review.get('closed_by')}")
    else:
        print(
            f"{args.id}: {item['status']}" + (f" ({item['reason']})" if item.get("reason") else "")
        )
    return EXIT_OK


def cmd_requests(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise CliError("--limit: a positive number", code=EXIT_USAGE)
    with opened_backend(args) as backend:
        listed = collect(
            lambda limit, cursor: backend.remediations(
                service=args.service,
                status=RemediationStatus.AWAITING_APPROVAL.value,
                limit=limit,
                cursor=cursor,
            ),
            args.limit,
        )
        items = [backend.remediation(item["id"]) for item in listed]
    if json_output(args):
        for item in items:
            sys.stdout.write(orjson.dumps(item).decode() + "\n")
        return EXIT_OK
    if not items:
        print("no plan is waiting for approval")
        return EXIT_OK
    print(f"{'ID':28} {'SERVICE':16} {'REQUESTED BY':16} {'STILL NEEDED':30} RESPOND BY")
    for item in items:
        approval = item.get("approval") or {}
        needed = ", ".join(approval.get("missing") or ()) or "-"
        if approval.get("emergency"):
            needed += " (emergency)"
        print(f"{item['id']:28} {item['service']:16} {approval.get('requester') or '(alert)':16} "
              f"{needed:30} {approval.get('response_due_at') or '-'}")  # fmt: skip
    return EXIT_OK


def _summary(item: dict[str, Any]) -> str:
    approval = item.get("approval") or {}
    line = f"{item['id']}: {item.get('action') or 'rollback'} of {item['service']} {item['status']}"
    if approval:
        line += (
            f"; needs {' + '.join(approval.get('required') or ())}"
            f"{' (emergency)' if approval.get('emergency') else ''}, respond by "
            f"{approval.get('response_due_at')}, expires {approval.get('expires_at')}"
        )
    return line
