"""Issue 13: the image carries its tools, runs the daemon as non-root, writes only its volume.

Run with `buildah run --isolation chroot` (see buildah.py): the daemon inside listens on
the host's loopback, and the test reaches it there.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.env import versions
from tests.image.buildah import cmdline, container, descendants, image_config, uid_of
from tests.unit.payloads import alert, payload

pytestmark = pytest.mark.image

VOLUME = "/var/lib/remediator"
SECRETS = "/run/secrets/remediator"
TOKEN = "image-test-token-0123456789abcdef"
# The daemon's drain budget (shutdown.timeout_seconds, default 20 s) plus a margin.
SHUTDOWN_WAIT_S = 30.0


def wait_for(predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def request(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def ready(port: int) -> bool:
    try:
        return request(port, "GET", "/readyz")[0] == 200
    except OSError:
        return False


def changed_since(root: Path, marker: Path) -> set[str]:
    """Paths under the container's root newer than ``marker``, outside the allowed places."""
    allowed = ("proc", "sys", "dev", "tmp", VOLUME.lstrip("/"))
    found = subprocess.run(
        ["find", str(root), "-newer", str(marker)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    changed = set()
    for path in found:
        rel = os.path.relpath(path, root)
        if rel == "." or any(rel == a or rel.startswith(a + "/") for a in allowed):
            continue
        changed.add(rel)
    return changed


def test_image_carries_helm_at_the_tests_version_and_pg_dump_15_or_newer(image: str) -> None:
    with container(image) as box:
        helm = box.run(["helm", "version", "--short"])
        assert helm.returncode == 0, helm.stderr
        assert helm.stdout.strip().startswith(versions.HELM + "+") or (
            helm.stdout.strip() == versions.HELM
        ), helm.stdout
        # Debian's wrapper and the binary the daemon picks (/usr/lib/postgresql/<major>/bin).
        for pg_dump in ("pg_dump", "/usr/lib/postgresql/15/bin/pg_dump"):
            out = box.run([pg_dump, "--version"])
            assert out.returncode == 0, out.stderr
            match = re.match(r"pg_dump \(PostgreSQL\) (\d+)\.", out.stdout)
            assert match, out.stdout
            # Client major >= the servers' (the tests' servers are Debian's 15).
            assert int(match.group(1)) >= 15, out.stdout


def test_image_config_is_non_root_with_labels_and_the_documented_entrypoint(image: str) -> None:
    config = image_config(image)["config"]
    assert config["User"] == "10001:10001"
    assert config["WorkingDir"] == VOLUME
    assert VOLUME in config["Volumes"]
    assert config["Entrypoint"] == ["remediator"]
    assert config["Cmd"] == ["run", "--listen", "0.0.0.0:9095"]
    labels = config["Labels"]
    for key in ("source", "version", "licenses", "title", "description", "revision"):
        assert labels.get(f"org.opencontainers.image.{key}"), key
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"


@dataclass
class DaemonRun:
    uid: int
    ready_status: int
    webhook_status: int
    webhook_body: dict[str, Any]
    exit_code: int
    volume_files: set[str]
    changed_by_daemon: set[str]
    changed_by_buildah_run: set[str]
    log: str


@pytest.fixture(scope="module")
def daemon_run(image: str) -> Iterator[DaemonRun]:
    """The image's entrypoint and command, run once: start, ready, an alert, SIGTERM."""
    # Not pytest's tmp_path: a concurrent pytest session of the same user prunes older
    # basetemp directories, which would pull the volume from under the running daemon.
    work = Path(tempfile.mkdtemp(prefix="remediator-image-test-", dir="/var/tmp"))
    try:
        yield from _daemon_run(image, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _daemon_run(image: str, work: Path) -> Iterator[DaemonRun]:
    volume = work / "volume"
    secrets = work / "secrets"
    volume.mkdir()
    secrets.mkdir()
    os.chown(volume, 10001, 10001)
    (secrets / "token").write_text(TOKEN)
    secrets.chmod(0o755)
    (secrets / "token").chmod(0o644)
    log = work / "daemon.log"
    config = image_config(image)["config"]
    port = free_port()
    # The image's own entrypoint and command, with only the port changed: the host's
    # network is shared, and 9095 may be taken there.
    cmd = [c.replace(":9095", f":{port}") for c in config["Cmd"]]
    command = [*config["Entrypoint"], *cmd]
    mounts = {volume: VOLUME, secrets: f"{SECRETS}:ro"}
    env = {"REMEDIATOR_WEBHOOK_TOKEN_FILE": f"{SECRETS}/token"}

    with container(image) as box:
        box.unmark_volume(VOLUME)
        root = box.mount()
        # What one `buildah run` itself changes in the root (mount points it creates, the
        # hosts and resolv.conf it writes), so the daemon is judged on its own writes.
        assert box.run(["true"], volumes=mounts).returncode == 0
        marker = work / "marker-1"
        marker.touch()
        time.sleep(1.1)  # find -newer compares mtimes, which may have 1 s resolution
        assert box.run(["true"], volumes=mounts).returncode == 0
        by_buildah = changed_since(root, marker)

        marker = work / "marker-2"
        marker.touch()
        time.sleep(1.1)
        proc = box.start(command, log=log, volumes=mounts, env=env)
        wait_for(lambda: ready(port) or proc.poll() is not None, timeout=60, what="/readyz")
        assert proc.poll() is None, f"daemon exited {proc.returncode}:\n{log.read_text()}"
        ready_status = request(port, "GET", "/readyz")[0]
        daemons = [p for p in descendants(proc.pid) if "remediator" in " ".join(cmdline(p))]
        assert daemons, f"no remediator process below buildah ({proc.pid})"
        uid = uid_of(daemons[-1])
        body = orjson.dumps(payload([alert(starts_at="2026-11-27T10:00:00Z")]))
        status, answer = request(port, "POST", "/api/v1/webhooks/alertmanager", body)
        # SIGTERM to the daemon, as the kubelet sends it to the container's process.
        os.kill(daemons[-1], signal.SIGTERM)
        exit_code = proc.wait(timeout=SHUTDOWN_WAIT_S)
        yield DaemonRun(
            uid=uid,
            ready_status=ready_status,
            webhook_status=status,
            webhook_body=orjson.loads(answer),
            exit_code=exit_code,
            volume_files={str(p.relative_to(volume)) for p in volume.rglob("*")},
            changed_by_daemon=changed_since(root, marker),
            changed_by_buildah_run=by_buildah,
            log=log.read_text(),
        )


def test_entrypoint_runs_the_daemon_as_uid_10001_reachable_from_the_host(
    daemon_run: DaemonRun,
) -> None:
    assert daemon_run.uid == 10001
    assert daemon_run.ready_status == 200, daemon_run.log


def test_daemon_in_the_image_accepts_an_alert_and_stops_cleanly_on_sigterm(
    daemon_run: DaemonRun,
) -> None:
    assert daemon_run.webhook_status == 200, (daemon_run.webhook_body, daemon_run.log)
    assert daemon_run.exit_code == 0, daemon_run.log


def test_daemon_writes_nothing_outside_its_volume(daemon_run: DaemonRun) -> None:
    # The journal is on the volume...
    assert "journal.db" in daemon_run.volume_files, daemon_run.volume_files
    # ...and nothing else in the root filesystem changed beyond what `buildah run` does.
    assert daemon_run.changed_by_daemon <= daemon_run.changed_by_buildah_run, (
        daemon_run.changed_by_daemon - daemon_run.changed_by_buildah_run
    )
