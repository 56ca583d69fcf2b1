from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from remediator.cli import main
from tests.unit.cli.certs import Pki, make_pki
from tests.unit.cli.fakeapi import FakeApi, running

TOKEN = "tok-7d1f0c9a55e2b4"  # nothing else in any output looks like it
CLI_ENV = (
    "REMEDIATOR_URL",
    "REMEDIATOR_TOKEN",
    "REMEDIATOR_TOKEN_FILE",
    "REMEDIATOR_CA_FILE",
    "REMEDIATOR_CLIENT_CERT",
    "REMEDIATOR_CLIENT_KEY",
)

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # What the developer's shell exports must not steer these tests.
    for name in CLI_ENV:
        monkeypatch.delenv(name, raising=False)
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    """Runs ``remediator ARGV...`` in-process: (exit code, stdout, stderr)."""

    def run(*argv: str) -> tuple[int, str, str]:
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse's usage errors
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def api() -> Iterator[FakeApi]:
    with running() as fake:
        yield fake


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return path


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))
