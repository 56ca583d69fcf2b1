"""A running set of peers: built, started in dependency order, always stopped.

``TestEnv`` is used by the CLI supervisor (``python -m tests.env up``) and by the
pytest plugin. Peers can be added while it runs (fixtures start peers lazily); stop()
tears everything down newest first and never raises.
"""

from __future__ import annotations

import atexit
import json
import signal
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from types import FrameType
from typing import Any

from tests.env import registry
from tests.env.base import Peer, PeerError, Progress, default_progress, tail

REPO_ROOT = Path(__file__).resolve().parents[2]
VAR_DIR = REPO_ROOT / "var" / "testenv"


class TestEnv:
    """Owns the peers of one session. Use as a context manager, or call stop()."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, workdir: Path, *, progress: Progress = default_progress) -> None:
        self.workdir = workdir
        self.progress = progress
        self.peers: dict[str, Peer] = {}  # started peers, in start order
        self.timings: dict[str, dict[str, float]] = {}
        self._lock = threading.RLock()
        self._atexit_registered = False
        self._old_sigterm: Any = None

    # -- lifecycle -------------------------------------------------------------------
    def build(self, names: Iterable[str]) -> None:
        """Build (fill the cache for) the named peers and their requirements."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        for name in registry.resolve(names):
            peer = registry.PEERS[name](workdir=self.workdir, progress=self.progress)
            self._build_one(peer)

    def start(self, names: Iterable[str]) -> list[Peer]:
        """Start the named peers (plus requirements) that are not running yet."""
        with self._lock:
            self._arm_cleanup()
            self.workdir.mkdir(parents=True, exist_ok=True)
            wanted = list(names)
            for name in registry.resolve(wanted):
                if name in self.peers:
                    continue
                peer = registry.PEERS[name](workdir=self.workdir, progress=self.progress)
                self._build_one(peer)
                deps = {dep: self.peers[dep].endpoints for dep in peer.requires}
                self.progress(f"{name}: starting")
                began = time.monotonic()
                # Registered before start() so a half-started peer is still stopped.
                self.peers[name] = peer
                try:
                    endpoints = peer.start(deps)
                except BaseException:
                    self._stop_one(peer)
                    del self.peers[name]
                    raise
                peer.endpoints = dict(endpoints)
                self.timings.setdefault(name, {})["start_s"] = round(time.monotonic() - began, 2)
                self.progress(f"{name}: up in {self.timings[name]['start_s']}s")
            return [self.peers[n] for n in wanted]

    def get(self, name: str) -> Peer:
        """The running peer, starting it (and its requirements) on first use."""
        with self._lock:
            if name not in self.peers:
                self.start([name])
            return self.peers[name]

    def stop(self) -> None:
        """Stop every peer, newest first. Safe to call twice; never raises."""
        with self._lock:
            for name in reversed(list(self.peers)):
                self.progress(f"{name}: stopping")
                self._stop_one(self.peers[name])
            self.peers.clear()
            self._disarm_cleanup()

    def __enter__(self) -> TestEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what the running environment offers -----------------------------------------
    def endpoints(self) -> dict[str, Any]:
        """All peers' endpoints merged; ``versions`` merged across peers."""
        merged: dict[str, Any] = {}
        versions: dict[str, str] = {}
        for peer in self.peers.values():
            for key, value in peer.endpoints.items():
                if key == "versions":
                    versions.update(value)
                else:
                    merged[key] = value
        merged["versions"] = versions
        return merged

    def state(self) -> dict[str, Any]:
        """Per-peer pids, ports, logs and endpoints (for ``status`` and debugging)."""
        return {
            name: {
                "pids": peer.pids(),
                "ports": list(peer.ports),
                "logs": [str(p) for p in peer.log_files()],
                "endpoints": peer.endpoints,
                **self.timings.get(name, {}),
            }
            for name, peer in self.peers.items()
        }

    def log_tails(self, names: Iterable[str], lines: int = 30) -> str:
        chunks = []
        for name in names:
            peer = self.peers.get(name)
            if peer is None:
                continue
            for log in peer.log_files():
                chunks.append(f"--- {name}: {log} (last {lines} lines) ---\n{tail(log, lines)}")
        return "\n".join(chunks)

    def write_json(self, path: Path, data: Any) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        tmp.replace(path)

    # -- internals -------------------------------------------------------------------
    def _build_one(self, peer: Peer) -> None:
        began = time.monotonic()
        try:
            peer.build()
        except PeerError:
            raise
        except Exception as exc:
            raise PeerError(f"{peer.name}: build failed: {exc}") from exc
        self.timings.setdefault(peer.name, {})["build_s"] = round(time.monotonic() - began, 2)

    def _stop_one(self, peer: Peer) -> None:
        try:
            peer.stop()
        except BaseException as exc:  # noqa: BLE001 - teardown must go on
            self.progress(f"{peer.name}: stop failed: {exc!r}")

    def _arm_cleanup(self) -> None:
        """Make sure peers die with us: SIGTERM becomes KeyboardInterrupt, atexit last."""
        if not self._atexit_registered:
            atexit.register(self.stop)
            self._atexit_registered = True
        # Signal handlers can only be installed from the main thread.
        if self._old_sigterm is None and threading.current_thread() is threading.main_thread():
            self._old_sigterm = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)

    def _disarm_cleanup(self) -> None:
        if self._atexit_registered:
            atexit.unregister(self.stop)
            self._atexit_registered = False
        if self._old_sigterm is not None and (
            threading.current_thread() is threading.main_thread()
        ):
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    # Unwinds through every `finally`/`with TestEnv` so peers are stopped in order.
    raise KeyboardInterrupt(f"signal {signum}")
