"""Run the real-peer test environment by hand.

  python -m tests.env build [--only kafka,kube]   fill the caches (CI warms them with this)
  python -m tests.env up [--only ...]             build, start, print endpoints, return
  python -m tests.env status                      which peers run, their pids and endpoints
  python -m tests.env down                        stop everything, remove the state files

``up`` starts a detached supervisor process that holds the peers (pid in
var/testenv/supervisor.pid) and writes var/testenv/endpoints.json, so ``status`` and
``down`` work from any shell. Logs: var/testenv/supervisor.log and
var/testenv/work/<peer>/*.log.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time

from tests.env import registry, versions
from tests.env.base import PeerError, pid_alive, tail
from tests.env.session import REPO_ROOT, VAR_DIR, TestEnv

PID_FILE = VAR_DIR / "supervisor.pid"
ENDPOINTS_FILE = VAR_DIR / "endpoints.json"
STATE_FILE = VAR_DIR / "state.json"
SUPERVISOR_LOG = VAR_DIR / "supervisor.log"
WORKDIR = VAR_DIR / "work"

EPILOG = """\
peers: {peers}
  kafka         Apache Kafka {kafka} (KRaft, Maven Central jars)  -> kafka_bootstrap
  postgres      PostgreSQL (Debian)                             -> postgres_dsn
  alertmanager  Alertmanager (Debian)                           -> alertmanager_url
  prometheus    Prometheus (Debian), alerts into alertmanager   -> prometheus_url
  smtp          aiosmtpd with AUTH                              -> smtp, smtp_user, smtp_password
  slack         Slack Web API stand-in (aiohttp)                -> slack_api_url, slack_token
  kube, helm    control plane + kwok, helm (Go module proxy)    -> kubeconfig

examples:
  python -m tests.env up --only kafka,postgres
  python -m tests.env status
  python -m tests.env down
  python -m tests.env build            # warm every cache, start nothing

Caches live in $REMEDIATOR_TESTENV_CACHE (default ~/.cache/remediator/testenv).
System packages: bash tests/env/install-system-deps.sh
"""


def _names(only: str | None) -> list[str]:
    if not only:
        return registry.available()
    names = [n.strip() for n in only.split(",") if n.strip()]
    registry.resolve(names)  # fail early on unknown or missing peers
    return names


def _read_pid() -> int | None:
    try:
        pid = int(PID_FILE.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def _remove_state_files() -> None:
    for path in (PID_FILE, ENDPOINTS_FILE, STATE_FILE):
        path.unlink(missing_ok=True)


def _pinned_versions() -> dict[str, str]:
    return {k.lower(): v for k, v in vars(versions).items() if k.isupper() and isinstance(v, str)}


# -- commands --------------------------------------------------------------------------
def cmd_build(args: argparse.Namespace) -> int:
    env = TestEnv(WORKDIR)
    env.build(_names(args.only))
    for name, timing in env.timings.items():
        print(f"{name:14s} build {timing.get('build_s', 0):7.2f}s")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    pid = _read_pid()
    if pid is not None:
        print(
            f"already up (supervisor pid {pid}); `python -m tests.env down` first", file=sys.stderr
        )
        return 1
    names = _names(args.only)
    _remove_state_files()
    if args.foreground:
        return _supervise(names)
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    with SUPERVISOR_LOG.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.env", "_supervise", "--only", ",".join(names)],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives this shell; `down` stops it
        )
    # Follow the supervisor's log until it reports ready or dies.
    deadline = time.monotonic() + args.timeout
    shown = 0
    while True:
        text = SUPERVISOR_LOG.read_text(errors="replace") if SUPERVISOR_LOG.exists() else ""
        sys.stderr.write(text[shown:])
        shown = len(text)
        if ENDPOINTS_FILE.exists():
            break
        if proc.poll() is not None:
            print(
                f"supervisor exited with {proc.returncode}; log {SUPERVISOR_LOG}", file=sys.stderr
            )
            return 1
        if time.monotonic() > deadline:
            print(f"not up after {args.timeout}s; stopping (log {SUPERVISOR_LOG})", file=sys.stderr)
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=120)
            return 1
        time.sleep(0.5)
    print(ENDPOINTS_FILE.read_text(), end="")
    print(f"up: supervisor pid {proc.pid}; endpoints in {ENDPOINTS_FILE}", file=sys.stderr)
    return 0


def _supervise(names: list[str]) -> int:
    """Hold the peers until SIGTERM/SIGINT; TestEnv turns SIGTERM into KeyboardInterrupt."""
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    PID_FILE.write_text(f"{os.getpid()}\n")
    env = TestEnv(WORKDIR)
    code = 0
    try:
        env.start(names)
        endpoints = env.endpoints()
        endpoints["versions"] = {**_pinned_versions(), **endpoints["versions"]}
        env.write_json(STATE_FILE, {"supervisor_pid": os.getpid(), "peers": env.state()})
        env.write_json(ENDPOINTS_FILE, endpoints)
        print(json.dumps(endpoints, indent=2, sort_keys=True), flush=True)
        while True:
            time.sleep(2)
            for name, peer in env.peers.items():
                for proc in peer.processes:
                    if not proc.alive():
                        print(
                            f"warning: {name}/{proc.name} exited; log {proc.log_path}", flush=True
                        )
            env.write_json(STATE_FILE, {"supervisor_pid": os.getpid(), "peers": env.state()})
    except KeyboardInterrupt:
        print("stopping on signal", flush=True)
    except PeerError as exc:
        print(f"error: {exc}", flush=True)
        code = 1
    finally:
        env.stop()
        _remove_state_files()
        print("all peers stopped", flush=True)
    return code


def cmd_supervise(args: argparse.Namespace) -> int:
    # SIGINT from a terminal is KeyboardInterrupt already; SIGTERM is armed by TestEnv.
    return _supervise(_names(args.only))


def cmd_down(args: argparse.Namespace) -> int:
    pid = _read_pid()
    if pid is None:
        # A supervisor killed with SIGKILL leaves its peers running: clean those up.
        _kill_recorded_peers()
        print("not running", file=sys.stderr)
        _remove_state_files()
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + args.timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if pid_alive(pid):
        # Last resort: kill the supervisor and every peer process group it recorded.
        print(f"supervisor {pid} did not stop in {args.timeout}s; killing", file=sys.stderr)
        _kill_recorded_peers()
        os.kill(pid, signal.SIGKILL)
    _remove_state_files()
    print("down", file=sys.stderr)
    return 0


def _recorded_pids() -> list[int]:
    try:
        state = json.loads(STATE_FILE.read_text())
    except (FileNotFoundError, ValueError):
        return []
    return [pid for peer in state.get("peers", {}).values() for pid in peer.get("pids", [])]


def _recorded_pids_alive() -> list[int]:
    return [pid for pid in _recorded_pids() if pid_alive(pid)]


def _kill_recorded_peers() -> None:
    for pid in _recorded_pids_alive():
        # ManagedProcess children lead their own process group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def cmd_status(args: argparse.Namespace) -> int:
    pid = _read_pid()
    if pid is None:
        print("not running")
        orphans = _recorded_pids_alive()
        if orphans:
            print(f"but peer processes {orphans} survive a dead supervisor: run `down`")
        return 3
    try:
        state = json.loads(STATE_FILE.read_text())
    except (FileNotFoundError, ValueError):
        print(f"supervisor pid {pid}: starting (log {SUPERVISOR_LOG})")
        print(tail(SUPERVISOR_LOG, 10))
        return 0
    print(f"supervisor pid {pid}; work dir {WORKDIR}")
    for name, info in state["peers"].items():
        pids = info.get("pids", [])
        alive = [p for p in pids if pid_alive(p)]
        in_process = "in-process" if info.get("ports") else "no process"  # e.g. helm: a CLI
        where = f"pids {alive}" if pids else in_process
        health = "ok" if len(alive) == len(pids) else "DEAD " + str(sorted(set(pids) - set(alive)))
        print(f"  {name:13s} {health:4s} {where:22s} ports {info.get('ports', [])}")
        for key, value in info.get("endpoints", {}).items():
            if key != "versions":
                print(f"      {key} = {value}")
    print(f"endpoints: {ENDPOINTS_FILE}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.env",
        description=__doc__,
        epilog=EPILOG.format(peers=", ".join(registry.PEER_SPECS), kafka=versions.KAFKA),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    only_help = "comma-separated peers (default: all available); requirements are added"

    p = sub.add_parser("build", help="fill the caches for the peers, start nothing")
    p.add_argument("--only", help=only_help)
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("up", help="build and start peers in the background, print endpoints")
    p.add_argument("--only", help=only_help)
    p.add_argument("--timeout", type=float, default=3600, help="give up after this many s")
    p.add_argument(
        "--foreground", action="store_true", help="hold the peers in this process until Ctrl-C"
    )
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("down", help="stop the peers started by `up`")
    p.add_argument("--timeout", type=float, default=120, help="before killing outright")
    p.set_defaults(func=cmd_down)

    p = sub.add_parser("status", help="which peers run, their pids and endpoints (exit 3: down)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("_supervise")  # internal: the detached process `up` starts
    p.add_argument("--only")
    p.set_defaults(func=cmd_supervise)

    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except PeerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
