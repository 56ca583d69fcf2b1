"""The contract every real peer of the test environment implements.

A peer is built once into the cache (keyed by its pinned version), then started on
free loopback ports inside a per-session work directory, and stopped without leaving
a process or a port behind.
"""

from __future__ import annotations

import abc
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

T = TypeVar("T")

Progress = Callable[[str], None]


def cache_root() -> Path:
    """Where built peers live, outside the repository so warm runs reuse them."""
    override = os.environ.get("REMEDIATOR_TESTENV_CACHE")
    if override:
        return Path(override)
    return Path.home() / ".cache" / "remediator" / "testenv"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def listening(port: int) -> bool:
    """Whether any socket on this machine is in LISTEN state on ``port`` (TCP, v4 or v6).

    Reads /proc/net instead of connecting, so probing never creates a connection the
    server has to accept (and might leak if it stops at that moment).
    """
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                next(fh)
                for line in fh:
                    fields = line.split()
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        return True
        except FileNotFoundError:
            continue
    return False


def wait_until(
    predicate: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s")


class PeerError(RuntimeError):
    """A peer could not be built or started; the message names the peer and its log."""


class ManagedProcess:
    """One child process in its own process group, logging to a file."""

    def __init__(
        self,
        *,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
        stop_signal: int = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.stop_signal = stop_signal
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.user = user
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                user=self.user,
                start_new_session=True,  # own process group: stop() kills children too
            )
        finally:
            log.close()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise PeerError(
                f"{self.name} exited with code {self.proc.returncode}; log: {self.log_path}\n"
                + tail(self.log_path)
            )

    def stop(self, *, timeout: float = 15.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, self.stop_signal)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=timeout)
        # The leader is gone, but stragglers in its group may not be.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc = None


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text[-lines:])


def run_checked(
    argv: Sequence[str],
    *,
    what: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    progress: Progress | None = None,
    user: str | None = None,
    timeout: float | None = None,
) -> str:
    """Run a build or setup command; on failure raise PeerError with its output."""
    if progress:
        progress(f"$ {' '.join(argv)}")
    result = subprocess.run(
        list(argv),
        cwd=cwd,
        env=dict(env) if env is not None else None,
        capture_output=True,
        text=True,
        check=False,
        user=user,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise PeerError(
            f"{what} failed (exit {result.returncode}): {' '.join(argv)}\n"
            f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result.stdout


def default_progress(message: str) -> None:
    print(f"[testenv] {message}", file=sys.stderr, flush=True)


def http_request(
    method: str,
    url: str,
    *,
    body: Any = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 5.0,
) -> tuple[int, bytes]:
    """Tiny blocking HTTP client for peer control APIs; returns (status, body).

    Blocking on purpose: peers are started and configured from sync fixtures and the
    CLI, never from inside an event loop. Connection errors raise OSError.
    """
    data: bytes | None
    hdrs = dict(headers or {})
    if body is None:
        data = None
    elif isinstance(body, bytes):
        data = body
    else:
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)  # noqa: S310
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as err:
        return int(err.code), err.read()


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        status, _ = http_request("GET", url, timeout=timeout)
    except OSError:
        return False
    return status == 200


def run_async(factory: Callable[[], Awaitable[T]], *, timeout: float = 60.0) -> T:
    """Run a coroutine to completion on a fresh loop in a helper thread.

    A sync fixture may be set up while pytest-asyncio's loop is running in this thread,
    where ``asyncio.run`` refuses to work; a separate thread always has no loop.
    """
    import asyncio

    result: list[T] = []
    error: list[BaseException] = []

    def runner() -> None:
        async def main() -> T:
            return await factory()

        try:
            result.append(asyncio.run(main()))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            error.append(exc)

    thread = threading.Thread(target=runner, name="testenv-run-async", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"coroutine did not finish within {timeout:.0f}s")
    if error:
        raise error[0]
    return result[0]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); it holds no port and will be reaped.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class Peer(abc.ABC):
    """A real system the tests talk to.

    Subclasses set ``name`` (the key used by ``--only`` and fixtures), ``requires``
    (peers that must be started first, e.g. helm requires kube) and ``version``.
    """

    name: ClassVar[str]
    requires: ClassVar[tuple[str, ...]] = ()
    version: ClassVar[str]

    def __init__(self, *, workdir: Path, progress: Progress = default_progress) -> None:
        self.workdir = workdir / self.name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.progress = progress
        self.processes: list[ManagedProcess] = []
        # Set by TestEnv to what start() returned, so fixtures hand out one object.
        self.endpoints: dict[str, Any] = {}
        # Loopback ports this peer listens on; the lifecycle test checks they are freed.
        self.ports: list[int] = []

    # -- lifecycle -----------------------------------------------------------------
    def build(self) -> None:  # noqa: B027 - optional hook, the default builds nothing
        """Make sure everything needed is in the cache; build what is missing.

        Must be idempotent and cheap when the cache is warm.
        """

    @abc.abstractmethod
    def start(self, deps: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """Start on free loopback ports and block until ready.

        ``deps`` maps each required peer's name to the endpoints it returned.
        Returns this peer's endpoints (JSON-serialisable),
        e.g. ``{"kafka_bootstrap": "127.0.0.1:1234"}``.
        """

    def stop(self) -> None:
        """Stop every process this peer started, newest first. Must never raise."""
        for proc in reversed(self.processes):
            try:
                proc.stop()
            except Exception as exc:  # noqa: BLE001 - teardown must go on
                self.progress(f"{self.name}: stopping {proc.name} failed: {exc}")
        self.processes.clear()

    # -- helpers -------------------------------------------------------------------
    def spawn(self, name: str, argv: Sequence[str], **kwargs: Any) -> ManagedProcess:
        proc = ManagedProcess(name=name, argv=argv, log_path=self.workdir / f"{name}.log", **kwargs)
        proc.start()
        self.processes.append(proc)
        return proc

    def log_files(self) -> list[Path]:
        return sorted(self.workdir.glob("*.log"))

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p.pid is not None and p.alive()]

    def wait_ready(
        self,
        predicate: Callable[[], bool],
        *,
        timeout: float,
        what: str,
        interval: float = 0.2,
    ) -> None:
        """Poll until ready; fail fast if a process died, and name the log either way."""
        deadline = time.monotonic() + timeout
        while True:
            for proc in self.processes:
                proc.check_alive()
            if predicate():
                return
            if time.monotonic() >= deadline:
                logs = ", ".join(str(p) for p in self.log_files()) or "(none)"
                main_log = self.processes[-1].log_path if self.processes else None
                raise PeerError(
                    f"{self.name}: {what} not ready after {timeout:.0f}s; logs: {logs}\n"
                    + (tail(main_log) if main_log else "")
                )
            time.sleep(interval)
