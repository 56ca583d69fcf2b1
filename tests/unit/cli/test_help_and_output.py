"""Every command's --help ends with examples that parse; every listing command takes
the same ``-o/--output text|json``, and ``--json`` still means ``--output json``."""

from __future__ import annotations

import argparse
import asyncio
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from remediator.cli import build_parser
from remediator.cli.common import OUTPUTS
from tests.unit.cli.conftest import Cli
from tests.unit.cli.test_local import _awaiting_approval

# What lists (or shows) records: the commands a script reads.
LISTINGS = {
    "record edit",
    "signals",
    "remediations",
    "history",
    "requests",
    "services",
    "circuit status",
    "db status",
    "db revert",
    "db backups",
    "db restore",
}


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield " ".join(path), parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from commands(child, (*path, name))


ALL = list(commands(build_parser()))
IDS = [name or "remediator" for name, _ in ALL]


def example_block(help_text: str) -> list[str]:
    """The lines after the last "examples:" heading, continuation lines joined."""
    _, found, block = help_text.rpartition("\nexamples:\n")
    assert found, "no examples: section"
    joined = re.sub(r"\\\n\s*", " ", block)
    return [line.strip() for line in joined.splitlines() if line.strip()]


def remediator_argv(line: str) -> list[str] | None:
    """The arguments of the remediator call in an example line, shell syntax removed."""
    words = shlex.split(line, comments=True)
    for stop in ("|", ">", "<", ";"):
        if stop in words:
            words = words[: words.index(stop)]
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # VAR=value before the command
        words = words[1:]
    return words[1:] if words and words[0] == "remediator" else None


def test_the_walk_finds_every_command() -> None:
    names = {name for name, _ in ALL}
    assert {"run", "config schema", "db backups", "auth hash-token", "journal copy"} <= names
    assert len(ALL) >= 30


@pytest.mark.parametrize(("name", "parser"), ALL, ids=IDS)
def test_help_ends_with_examples_that_parse(name: str, parser: argparse.ArgumentParser) -> None:
    lines = example_block(parser.format_help())
    calls = [argv for argv in map(remediator_argv, lines) if argv is not None]
    assert calls, f"`remediator {name} --help` shows no remediator example"
    assert remediator_argv(lines[-1]) is not None, "the help does not end with an example"
    for argv in calls:
        parsed = build_parser().parse_args(argv)  # exits (SystemExit) when it does not parse
        assert callable(parsed.func)
    if name:  # a command's own examples call that command
        assert any(" ".join(argv).startswith(name) for argv in calls), calls


@pytest.mark.parametrize(("name", "parser"), ALL, ids=IDS)
def test_listings_share_one_output_option(name: str, parser: argparse.ArgumentParser) -> None:
    options = {option: action for action in parser._actions for option in action.option_strings}
    if name not in LISTINGS:
        assert "--json" not in options, f"{name}: --json without --output"
        return
    output = options["--output"]
    assert options["-o"] is output
    assert tuple(output.choices or ()) == OUTPUTS and output.default == "text"
    assert options["--json"].dest == "output"
    for flags in (["-o", "json"], ["--output", "json"], ["--json"]):
        assert _parse(name, flags).output == "json"
    assert _parse(name, []).output == "text"


def _parse(name: str, flags: list[str]) -> argparse.Namespace:
    positional = ["checkout"] if name.startswith("db ") else []
    if name == "record edit":
        positional = ["rem_0123abcd"]
    if name == "db restore":
        positional += ["--backup", "20261127T093012123456Z-checkout-4f2a9c"]
    return build_parser().parse_args([*name.split(), *positional, *flags])


def test_output_json_is_one_object_per_line_and_what_json_printed(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    waiting = asyncio.run(_awaiting_approval(path))  # signals, and a plan awaiting approval
    journal = ["--journal", f"sqlite:///{path}"]
    for command in (["signals"], ["remediations"], ["history"], ["requests"]):
        code, as_option, _ = cli(*command, "--output", "json", *journal)
        assert code == 0
        assert cli(*command, "--json", *journal)[1] == as_option
        assert cli(*command, "-o", "json", *journal)[1] == as_option
        items = [orjson.loads(line) for line in as_option.splitlines()]
        assert items and all(isinstance(item, dict) for item in items), command
        if command != ["signals"]:
            assert items[0]["id"] == waiting
        assert cli(*command, *journal)[1] != as_option  # text is not JSON


def test_circuit_status_as_json(cli: Cli, tmp_path: Path) -> None:
    journal_path = tmp_path / "journal.db"
    asyncio.run(_awaiting_approval(journal_path))
    code, out, _ = cli("circuit", "status", "-o", "json", "--journal", f"sqlite:///{journal_path}")
    assert code == 0
    assert orjson.loads(out)["open"] is False
