"""Starting and stopping the environment twice leaves no process and no port behind."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.env import registry
from tests.env.base import listening, pid_alive
from tests.env.session import VAR_DIR, TestEnv

pytestmark = pytest.mark.integration


def _peers_under_test() -> list[str]:
    # Every available peer (kube/helm too once they are in the tree); narrow it with
    # REMEDIATOR_LIFECYCLE_PEERS=kafka,postgres when iterating on one peer.
    override = os.environ.get("REMEDIATOR_LIFECYCLE_PEERS")
    if override:
        return [n for n in override.split(",") if n]
    return registry.available()


def _processes_mentioning(text: str) -> list[str]:
    """Any process whose command line names our work dir: a leak we did not track."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{entry.name}: {cmdline[:200]}")
    return found


def _listening_ports_of_groups(pgids: list[int]) -> set[int]:
    """TCP ports in LISTEN state held by any process in these process groups.

    Peers report their ports in ``.ports``, but this also finds ports a peer did not
    report (a component's metrics or health port, say).
    """
    inodes: set[str] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[2]) not in pgids:
                continue
            for fd in (entry / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except (OSError, ValueError, IndexError):
            continue
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as fh:
            next(fh)
            for line in fh:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_start_stop_twice_leaves_nothing_behind() -> None:
    names = _peers_under_test()
    workdir = VAR_DIR / "lifecycle" / str(os.getpid())  # never shared with another run
    shutil.rmtree(workdir, ignore_errors=True)
    for round_no in (1, 2):
        env = TestEnv(workdir)
        try:
            env.start(names)
            started = {
                name: (
                    peer.pids(),
                    sorted(set(peer.ports) | _listening_ports_of_groups(peer.pids())),
                )
                for name, peer in env.peers.items()
            }
            assert set(names) <= set(started), f"round {round_no}: not all peers started"
            for name, (pids, ports) in started.items():
                # A CLI-only peer (helm) has neither; a peer with processes must listen.
                assert ports or not pids, f"{name} listens on no port"
                for port in ports:
                    assert listening(port), f"round {round_no}: {name} not listening on {port}"
        finally:
            env.stop()
        for name, (pids, ports) in started.items():
            for pid in pids:
                assert not pid_alive(pid), f"round {round_no}: {name} pid {pid} survived stop"
                with pytest.raises(ProcessLookupError):
                    os.killpg(pid, 0)  # nothing left in its process group either
            for port in ports:
                assert not listening(port), f"round {round_no}: {name} port {port} still open"
        assert _processes_mentioning(str(workdir)) == [], f"round {round_no}: leaked processes"
    shutil.rmtree(workdir, ignore_errors=True)
