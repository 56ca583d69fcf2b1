"""``remediator auth hash-token``: the token from stdin in, the principals file's line out."""

from __future__ import annotations

import hashlib
import io
import sys

import pytest

from tests.unit.cli.conftest import Cli

TOKEN = "Zq8w3UeP0r+ZkLx4n1VbT6yH2dJ9sAfQ7mC5gE0iRtY="


def test_hash_token_prints_the_sha256_line_and_never_the_token(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(TOKEN + "\n"))
    code, out, err = cli("auth", "hash-token")
    assert code == 0 and err == ""
    assert out == f"sha256:{hashlib.sha256(TOKEN.encode()).hexdigest()}\n"
    assert TOKEN not in out


@pytest.mark.parametrize(
    ("stdin", "fragment"),
    [
        ("", "no token on standard input"),
        ("short-token\n", "the token has 11 characters; use a random one of at least 32"),
        ("two words " + "x" * 40, "one word of visible ASCII characters"),
        ("é" * 40, "one word of visible ASCII characters"),
    ],
)
def test_hash_token_refuses_what_is_not_a_usable_token(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, stdin: str, fragment: str
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code, out, err = cli("auth", "hash-token")
    assert (code, out) == (2, "")
    assert err.startswith("remediator: ") and fragment in err
    assert stdin.strip() == "" or stdin.strip() not in err


def test_hash_token_help_shows_an_example(cli: Cli) -> None:
    code, out, _ = cli("auth", "hash-token", "--help")
    assert code == 0
    assert "remediator auth hash-token < alice.token" in out
    assert "openssl rand -base64 32" in out
