"""Every command and flag the CLI had still parses; the API flags are checked before any
request, and a credential is never taken from, or echoed to, the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from remediator.cli import build_parser
from tests.unit.cli.conftest import TOKEN, Cli
from tests.unit.cli.fakeapi import FakeApi

OPERATOR_COMMANDS = [
    ["signals"],
    ["remediations"],
    ["history"],
    ["report", "rem_1"],
    ["approve", "rem_1"],
    ["circuit", "status"],
    ["circuit", "reset"],
]


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--config", "c.yaml", "--journal", "sqlite:///j.db", "--listen", "0.0.0.0:1",
         "--rules", "r", "--dry-run", "--log-format", "json", "--kubeconfig", "k",
         "--instance-id", "i", "--kafka-bootstrap", "k:9092", "--insecure-no-auth"],
        ["signals", "--service", "s", "--limit", "3", "--json", "--journal", "sqlite:///j.db"],
        ["remediations", "rem_1", "--service", "s", "--status", "skipped", "--limit", "2",
         "--json", "--config", "c.yaml"],
        ["history", "rem_1", "--service", "s", "--limit", "1"],
        ["report", "rem_1", "--format", "html"],
        ["approve", "rem_1", "--by", "alice"],
        ["circuit", "status"],
        ["circuit", "reset", "--journal", "sqlite:///j.db"],
        ["config", "show", "--config", "c.yaml"],
        ["rules", "check", "rules"],
        ["rules", "explain", "--rules", "rules", "--alert", "a.json", "--dry-run"],
        ["db", "status", "checkout", "--json"],
        ["db", "revert", "checkout", "--to", "004", "--dry-run"],
        ["db", "restore", "checkout", "--backup", "b", "--table", "orders"],
        ["version"],
    ],
)  # fmt: skip
def test_every_command_and_flag_of_before_still_parses(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert callable(args.func)


@pytest.mark.parametrize("argv", OPERATOR_COMMANDS)
def test_operator_commands_take_the_api_flags(argv: list[str], tmp_path: Path) -> None:
    args = build_parser().parse_args(
        [*argv, "--url", "https://r.example:9095", "--token-file", str(tmp_path / "t"),
         "--ca-file", "ca.pem", "--client-cert", "c.pem", "--client-key", "k.pem",
         "--timeout", "5"]
    )  # fmt: skip
    assert args.url == "https://r.example:9095"
    assert args.token_file == tmp_path / "t"
    assert (args.ca_file, args.client_cert, args.client_key) == (
        Path("ca.pem"), Path("c.pem"), Path("k.pem")
    )  # fmt: skip


@pytest.mark.parametrize("argv", OPERATOR_COMMANDS)
def test_each_operator_command_has_help_with_examples(
    argv: list[str], cli: Cli, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(*[a for a in argv if not a.startswith("rem_")], "--help")
    assert code == 0
    assert "examples:" in out
    assert "--url" in out and "--token-file" in out and "REMEDIATOR_TOKEN" in out
    assert "exit codes:" in out


@pytest.mark.parametrize("form", [["--token", TOKEN], [f"--token={TOKEN}"]])
def test_a_token_flag_is_refused_without_echoing_it(form: list[str], cli: Cli) -> None:
    code, out, err = cli("signals", "--url", "http://127.0.0.1:1", *form)
    assert code == 2
    assert "--token is not accepted" in err and "--token-file" in err
    assert TOKEN not in out + err


@pytest.mark.parametrize("limit", ["0", "-3", "many"])
def test_limit_must_be_a_positive_integer(limit: str, cli: Cli) -> None:
    code, _, err = cli("signals", "--limit", limit)
    assert code == 2
    assert "--limit" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--url", "http://127.0.0.1:1", "--journal", "sqlite:///j.db"], "give one of them"),
        (["--url", "ftp://h"], "expected http(s)://HOST"),
        (["--url", "https://"], "expected http(s)://HOST"),
        (["--url", "https://h:notaport"], "not a URL"),
        (["--url", "https://h/?x=1"], "no query or fragment"),
        (["--url", "http://10.1.2.3:9095"], "send the token in clear"),
        (["--url", "http://remediator.example"], "send the token in clear"),
        (["--url", "http://127.0.0.1:1", "--ca-file", "ca.pem"], "--ca-file needs an https://"),
        (["--url", "https://h", "--client-key", "k.pem"], "--client-key needs --client-cert"),
        (["--url", "https://h", "--timeout", "0"], "--timeout must be above 0"),
        (["--url", "https://h", "--timeout", "nan"], "--timeout must be above 0"),
        (["--url", "https://h", "--timeout", "inf"], "--timeout must be above 0"),
    ],
)
def test_api_flag_mistakes_are_usage_errors_before_any_request(
    argv: list[str], message: str, cli: Cli, api: FakeApi
) -> None:
    code, out, err = cli("signals", *argv)
    assert (code, out) == (2, "")
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert api.seen == []


def test_credentials_in_the_url_are_refused_and_not_echoed(cli: Cli) -> None:
    code, _, err = cli("signals", "--url", f"https://alice:{TOKEN}@r.example")
    assert code == 2
    assert "holds credentials" in err
    assert TOKEN not in err


def test_plain_http_elsewhere_than_loopback_needs_saying_so(cli: Cli) -> None:
    # --plain-http lifts the refusal; nothing listens there, so it ends unreachable (3).
    code, _, err = cli("signals", "--url", "http://192.0.2.1:9", "--plain-http", "--timeout", "0.2")
    assert code == 3
    assert "in clear" not in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read it"),
        ("", "empty"),
        ("  \n", "empty"),
        (f"{TOKEN} second-word\n", "one word of visible ASCII"),
        (f"{TOKEN}\nline-two\n", "one word of visible ASCII"),
        (f"{TOKEN}\x01\n", "one word of visible ASCII"),
    ],
)
def test_a_bad_token_file_is_a_usage_error_naming_the_file_not_the_token(
    content: str | None, message: str, cli: Cli, api: FakeApi, tmp_path: Path
) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    code, out, err = cli("signals", "--url", api.url, "--token-file", str(path))
    assert code == 2
    assert f"--token-file {path}" in err and message in err
    assert TOKEN not in out + err
    assert api.seen == []


def test_a_bad_token_in_the_environment_names_the_variable(
    cli: Cli, api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REMEDIATOR_TOKEN", f"{TOKEN} {TOKEN}")
    code, out, err = cli("signals", "--url", api.url)
    assert code == 2
    assert "$REMEDIATOR_TOKEN" in err
    assert TOKEN not in out + err


def test_by_is_for_the_local_journal_only(cli: Cli, api: FakeApi, token_file: Path) -> None:
    code, _, err = cli(
        "approve", "rem_1", "--by", "alice", "--url", api.url, "--token-file", str(token_file)
    )
    assert code == 2
    assert "--by applies to the local journal only" in err
    assert api.seen == []


def test_comment_is_for_the_api_only(cli: Cli, tmp_path: Path) -> None:
    code, _, err = cli(
        "approve", "rem_1", "--comment", "ok", "--journal", f"sqlite:///{tmp_path / 'j.db'}"
    )
    assert code == 2
    assert "--comment is recorded over the API only" in err
    assert not (tmp_path / "j.db").exists()  # refused before the journal was touched
