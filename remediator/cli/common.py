"""What every command shares: exit codes, the error they end with, settings flags."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path
from typing import Any

from remediator.settings import DEFAULT_JOURNAL, Settings, load_settings

# Exit codes of the operator commands (docs/operations.md, "Command line").
EXIT_OK = 0
EXIT_FAILED = 1  # no such remediation, not awaiting approval, journal errors
EXIT_USAGE = 2  # the caller's mistake: flags, credentials, a 4xx answer
EXIT_UNAVAILABLE = 3  # the daemon cannot be reached or cannot answer now (5xx)


class CliError(Exception):
    """A command's end with one line for stderr and an exit code; never a traceback."""

    def __init__(self, message: str, *, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="FILE", help="YAML settings file.")
    parser.add_argument(
        "--journal", metavar="URL", help=f"Journal location (default {DEFAULT_JOURNAL})."
    )


OUTPUTS = ("text", "json")


def add_output_option(parser: argparse.ArgumentParser, json_shape: str) -> None:
    """``-o/--output text|json``, the same on every command that lists or shows records.

    ``--json`` stays as the older spelling of ``--output json``.
    """
    parser.add_argument(
        "-o",
        "--output",
        choices=OUTPUTS,
        default="text",
        help=f"text (default: a table for people) or json ({json_shape}).",
    )
    parser.add_argument(
        "--json", dest="output", action="store_const", const="json", help="Same as --output json."
    )


def json_output(args: argparse.Namespace) -> bool:
    return getattr(args, "output", "text") == "json"


def with_examples(examples: str, *, notes: str = "") -> str:
    """An epilog ending in examples: every command's --help ends with how to call it."""
    block = "examples:\n" + textwrap.indent(textwrap.dedent(examples).strip("\n"), "  ") + "\n"
    return (textwrap.dedent(notes).rstrip("\n") + "\n\n" if notes else "") + block


def positive_int(text: str) -> int:
    """argparse ``type``: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def overrides(args: argparse.Namespace) -> dict[str, Any]:
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


def settings_of(args: argparse.Namespace) -> Settings:
    return load_settings(config_file=getattr(args, "config", None), overrides=overrides(args))
