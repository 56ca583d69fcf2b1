"""The operator CLI against a running daemon's API, both as processes: ``--url`` and
``--token-file``, nothing but HTTP between them (no journal file shared)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.e2e.daemon import Daemon
from tests.e2e.test_alertmanager_intake import post, wait_for
from tests.unit.payloads import alert, payload

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMEDIATOR_")}
    env["PYTHONPATH"] = str(REPO)
    return env


def remediator(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "remediator", *argv],
        capture_output=True, text=True, timeout=60, check=False, env=cli_env(), cwd=cwd,
    )  # fmt: skip


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    # Not the daemon's directory: the CLI must not find its journal by accident.
    path = tmp_path / "operator"
    path.mkdir()
    return path


@pytest.fixture
def token_file(daemon: Daemon, workdir: Path) -> Path:
    path = workdir / "token"
    path.write_text(daemon.operator_token + "\n")  # read and operate
    path.chmod(0o600)
    return path


def over_api(daemon: Daemon, token_file: Path) -> list[str]:
    return ["--url", daemon.url, "--token-file", str(token_file)]


def test_the_cli_reads_a_running_daemon_over_its_api(
    daemon: Daemon, token_file: Path, workdir: Path
) -> None:
    alerts = [alert(name="HighErrorRate", fingerprint=f"e{i}", extra_labels={"pod": f"p{i}"})
              for i in range(3)]  # fmt: skip
    status, body = post(daemon, orjson.dumps(payload(alerts)))
    assert status == 200 and body["accepted"] == 3
    wait_for(lambda: len(daemon.get("/api/v1/remediations")[1]["items"]) == 3, timeout=30,
             what="three decisions")  # fmt: skip
    api = over_api(daemon, token_file)
    outputs = []

    signals = remediator("signals", "--service", "checkout", "--json", *api, cwd=workdir)
    assert signals.returncode == 0, signals.stderr
    assert {orjson.loads(line)["kind"] for line in signals.stdout.splitlines()} == {"HighErrorRate"}
    assert len(signals.stdout.splitlines()) == 3
    outputs.append(signals)

    listed = remediator("remediations", "--status", "skipped", "--json", *api, cwd=workdir)
    assert listed.returncode == 0, listed.stderr
    items = [orjson.loads(line) for line in listed.stdout.splitlines()]
    assert len(items) == 3
    assert {i["reason"] for i in items} == {"outside_rollback_window"}
    rid = items[0]["id"]
    outputs.append(listed)

    shown = remediator("remediations", rid, *api, cwd=workdir)
    assert shown.returncode == 0 and "outside_rollback_window" in shown.stdout
    history = remediator("history", rid, *api, cwd=workdir)
    assert history.returncode == 0 and "decided by rule high-error-rate-rollback" in history.stdout
    report = remediator("report", rid, *api, cwd=workdir)
    assert report.returncode == 0 and report.stdout.startswith("# Rollback record")
    assert "checkout" in report.stdout
    circuit = remediator("circuit", "status", *api, cwd=workdir)
    assert (circuit.returncode, circuit.stdout) == (0, "circuit breaker closed\n")
    outputs += [shown, history, report, circuit]

    for done in outputs:
        for token in (daemon.token, daemon.operator_token):
            assert token not in done.stdout + done.stderr
            assert token not in " ".join(done.args)
    assert not (workdir / "var").exists()  # no local journal was made or read


def test_paging_past_one_page_of_the_api(daemon: Daemon, token_file: Path, workdir: Path) -> None:
    for batch in range(3):
        alerts = [alert(name="Watchdog", fingerprint=f"w{batch}-{i}") for i in range(400)]
        assert post(daemon, orjson.dumps(payload(alerts)))[0] == 200
    done = remediator(
        "signals", "--limit", "1100", "--json", *over_api(daemon, token_file), cwd=workdir
    )
    assert done.returncode == 0, done.stderr
    ids = [orjson.loads(line)["id"] for line in done.stdout.splitlines()]
    assert len(ids) == len(set(ids)) == 1100


def test_a_wrong_token_is_exit_2_with_one_clear_line(
    daemon: Daemon, workdir: Path, token_file: Path
) -> None:
    wrong = workdir / "wrong-token"
    wrong_token = "e2e-wrong-9b3c71"
    wrong.write_text(wrong_token + "\n")
    for argv in (["signals"], ["circuit", "status"], ["circuit", "reset"]):
        done = remediator(*argv, "--url", daemon.url, "--token-file", str(wrong), cwd=workdir)
        assert done.returncode == 2, done.stderr
        assert done.stdout == ""
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
        assert done.stderr.startswith("remediator: unauthorized: ")
        assert "the credential given was refused" in done.stderr
        assert wrong_token not in done.stderr and daemon.operator_token not in done.stderr


def test_no_daemon_there_is_exit_3(workdir: Path) -> None:
    token_file = workdir / "token"
    token_file.write_text("e2e-unused-token\n")
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    done = remediator(
        "circuit", "status", "--url", f"http://127.0.0.1:{port}", "--token-file", str(token_file),
        cwd=workdir,
    )  # fmt: skip
    assert done.returncode == 3
    assert done.stderr.startswith(f"remediator: cannot reach http://127.0.0.1:{port}")


@pytest.fixture
def silent_listener() -> Iterator[socket.socket]:
    """Accepts connections and never answers: a CLI talking to it stays alive to be seen."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock


def test_the_token_is_not_in_the_argv_ps_shows(
    silent_listener: socket.socket, workdir: Path
) -> None:
    token = "e2e-ps-token-4e1d08"
    token_file = workdir / "token"
    token_file.write_text(token + "\n")
    port = silent_listener.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "remediator", "signals", "--url", f"http://127.0.0.1:{port}",
         "--token-file", str(token_file), "--timeout", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env(), cwd=workdir,
    )  # fmt: skip
    try:
        silent_listener.settimeout(30)
        connection, _ = silent_listener.accept()  # it has read the token and is using it
        with connection:
            request = connection.recv(65536)
            cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes()
            assert process.poll() is None
    finally:
        process.kill()
        process.communicate(timeout=30)
    assert b"--token-file" in cmdline
    assert token.encode() not in cmdline
    assert f"Authorization: Bearer {token}".encode() in request  # it was in use
