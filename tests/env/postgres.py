"""PostgreSQL from Debian's packages, as a private cluster in the work dir.

``initdb`` a fresh data dir, then run ``postgres`` itself (not ``pg_ctl``, so the
process is ours to watch and stop) on a free loopback port with its socket in the work
dir. PostgreSQL refuses to run as root, so as root we run it as the system user
``remediator-test`` (created if missing). Durability is switched off for speed, unless
a benchmark asks for a ``durable`` server (bench/intake.py compares it with a SQLite
journal that fsyncs every commit).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.env.base import Peer, PeerError, free_port, run_async, run_checked

RUN_AS = "remediator-test"
DB_USER = "remediator"
DB_PASSWORD = "remediator-test-password"


def find_bindir() -> Path:
    override = os.environ.get("REMEDIATOR_PG_BINDIR")
    if override:
        return Path(override)
    candidates = [
        p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "postgres").is_file()
    ]
    if not candidates:
        raise PeerError(
            "postgres: no /usr/lib/postgresql/<major>/bin/postgres; install the Debian "
            "package 'postgresql' (bash tests/env/install-system-deps.sh)"
        )
    return max(candidates, key=lambda p: int(re.sub(r"\D", "", p.parent.name) or 0))


def _ensure_user() -> str | None:
    """The user to run as: ourselves, or (as root) the unprivileged test user."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(RUN_AS)
    except KeyError:
        run_checked(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", RUN_AS],
            what=f"postgres: useradd {RUN_AS}",
        )
    return RUN_AS


def _chown_tree(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)


class PostgresPeer(Peer):
    name = "postgres"
    version = "debian"

    def __init__(self, *, durable: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.durable = durable
        self.bindir = Path()
        self.port = 0
        self.dsn = ""
        self.run_as: str | None = None

    def build(self) -> None:
        self.bindir = find_bindir()

    def start(self, deps: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        if not self.bindir.parts:
            self.build()
        self.run_as = _ensure_user()
        data = self.workdir / "data"
        sockets = self.workdir / "sock"
        shutil.rmtree(data, ignore_errors=True)
        sockets.mkdir(parents=True, exist_ok=True)
        pwfile = self.workdir / "pwfile"
        pwfile.write_text(DB_PASSWORD + "\n")
        if self.run_as:
            _chown_tree(self.workdir, self.run_as)

        run_checked(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                DB_USER,
                f"--pwfile={pwfile}",
                "--auth-local=trust",  # the socket lives in our work dir only
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ],
            what="postgres: initdb",
            user=self.run_as,
            timeout=120,
        )
        self.port = free_port()
        self.ports = [self.port]
        self.spawn(
            "postgres",
            [
                str(self.bindir / "postgres"),
                "-D",
                str(data),
                "-p",
                str(self.port),
                "-k",
                str(sockets),
                "-c",
                "listen_addresses=127.0.0.1",
                *self._tuning(),
            ],
            user=self.run_as,
            # SIGINT is PostgreSQL's "fast" shutdown; SIGTERM ("smart") waits for clients.
            stop_signal=signal.SIGINT,
        )
        self.dsn = f"postgresql://{DB_USER}:{DB_PASSWORD}@127.0.0.1:{self.port}/postgres"
        self.wait_ready(self._accepts_queries, timeout=60, what=f"SELECT 1 on port {self.port}")
        return {"postgres_dsn": self.dsn, "versions": {"postgresql": self._server_version()}}

    def _tuning(self) -> list[str]:
        if self.durable:  # the server's own defaults: every commit is flushed
            settings = ["max_connections=100"]
        else:  # throwaway data: trade durability for speed
            settings = ["fsync=off", "synchronous_commit=off", "full_page_writes=off",
                        "shared_buffers=32MB", "max_connections=50"]  # fmt: skip
        return [arg for setting in settings for arg in ("-c", setting)]

    def _accepts_queries(self) -> bool:
        ready = subprocess.run(
            [str(self.bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
            check=False,
            timeout=10,
        )
        if ready.returncode != 0:
            return False
        import asyncpg

        async def probe() -> bool:
            conn = await asyncpg.connect(self.dsn, timeout=5)
            try:
                return bool(await conn.fetchval("SELECT 1") == 1)
            finally:
                await conn.close()

        try:
            return run_async(probe, timeout=15)
        except Exception:  # noqa: BLE001 - e.g. "the database system is starting up"
            return False

    def _server_version(self) -> str:
        out = run_checked([str(self.bindir / "postgres"), "--version"], what="postgres --version")
        match = re.search(r"\(PostgreSQL\) (\S+)", out)  # "postgres (PostgreSQL) 15.14 (...)"
        return match.group(1) if match else out.strip()
