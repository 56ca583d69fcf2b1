"""The journal on a real, small filesystem that fills up or turns read-only.

Each test mounts its own tmpfs (root required, as on the project machine and in CI):
a mount that fails fails the test, it is never skipped.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from remediator.domain.errors import TemporaryError
from remediator.ingress.auth import Authenticator, WebhookCredential
from remediator.ingress.http import IntakeApp, IntakeState
from remediator.journal.sqlite import MIN_FREE_BYTES, SqliteJournal
from remediator.metrics import Metrics
from tests.unit.payloads import storm

pytestmark = pytest.mark.integration

TOKEN = "fs-fault-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
WEBHOOK = "/api/v1/webhooks/alertmanager"
FS_SIZE = "8m"


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "fs"
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={FS_SIZE}", "tmpfs", str(mount)],
        check=True,
        capture_output=True,
    )
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True, capture_output=True)


class Daemon:
    """The intake app over a journal on the small filesystem."""

    def __init__(self, client: TestClient, journal: SqliteJournal) -> None:
        self.client = client
        self.journal = journal

    async def post(self, body: object) -> tuple[int, dict[str, object], str | None]:
        resp = await self.client.post(WEBHOOK, data=orjson.dumps(body), headers=BEARER)
        return resp.status, await resp.json(), resp.headers.get("Retry-After")

    async def ready(self) -> tuple[int, dict[str, object]]:
        resp = await self.client.get("/readyz")
        return resp.status, await resp.json()

    async def live(self) -> int:
        return (await self.client.get("/healthz")).status


@contextlib.asynccontextmanager
async def daemon_on(db: Path, *, min_free_bytes: int = MIN_FREE_BYTES) -> AsyncIterator[Daemon]:
    journal = SqliteJournal(path=db, busy_timeout_ms=100, min_free_bytes=min_free_bytes)
    await journal.open()
    intake = IntakeApp(
        journal=journal,
        metrics=Metrics(),
        auth=Authenticator(webhook=WebhookCredential(bearer_token=TOKEN)),  # ingest
        state=IntakeState(),
        service_labels=("service",),
        namespace_labels=("namespace",),
        body_limit_bytes=16 * 1024 * 1024,
        retry_after_seconds=3,
    )
    client = TestClient(TestServer(intake.build()))
    await client.start_server()
    try:
        yield Daemon(client, journal)
    finally:
        await client.close()
        await journal.close()


def truncate_wal(db: Path) -> None:
    """Checkpoint and empty the WAL: the next commit must grow a file, not reuse space."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    assert busy == 0
    assert (db.parent / f"{db.name}-wal").stat().st_size == 0


def write_forever(fd: int, data: bytes) -> None:
    while True:
        os.write(fd, data)


def fill(directory: Path) -> Path:
    """Write zeros until the filesystem refuses another byte."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        for chunk in (65536, 1):  # big writes, then the last partial block
            with pytest.raises(OSError) as refused:
                write_forever(fd, b"\0" * chunk)
            assert refused.value.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


@pytest.mark.parametrize(
    ("min_free_bytes", "probe_error"),
    [
        (MIN_FREE_BYTES, "nearly full"),  # the free-space floor
        (0, "database or disk is full"),  # no floor: the heartbeat's own commit fails
    ],
)
async def test_a_full_filesystem_makes_the_daemon_unready_until_space_is_freed(
    small_fs: Path, min_free_bytes: int, probe_error: str
) -> None:
    db = small_fs / "journal.db"
    async with daemon_on(db, min_free_bytes=min_free_bytes) as daemon:
        assert (await daemon.ready())[0] == 200
        assert (await daemon.post(storm(20)))[0] == 200
        truncate_wal(db)
        filler = fill(small_fs)

        status, body = await daemon.ready()
        assert status == 503
        assert probe_error in str(body["checks"])
        with pytest.raises(TemporaryError, match=probe_error):
            await daemon.journal.check_writable()
        # A webhook's write fails with SQLITE_FULL: 503, Alertmanager retries.
        status, answer, retry_after = await daemon.post(storm(200))
        assert (status, retry_after) == (503, "3")
        assert "database or disk is full" in str(answer["error"])
        # A full disk is no reason to restart: the writer is alive and liveness holds.
        assert daemon.journal.alive()
        assert await daemon.live() == 200

        filler.unlink()
        assert (await daemon.ready())[0] == 200
        status, answer, _ = await daemon.post(storm(200))
        assert status == 200 and answer["accepted"] == 180  # 20 of them came before
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT count(*) FROM signals").fetchone()[0] == 200


@pytest.fixture
def ext4_fs(tmp_path: Path) -> Iterator[Path]:
    """A small ext4 image, loop-mounted with errors=remount-ro (as production volumes are)."""
    image = tmp_path / "fs.img"
    mount = tmp_path / "ext4"
    mount.mkdir()
    with image.open("wb") as f:
        f.truncate(16 * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
    subprocess.run(
        ["mount", "-o", "loop,errors=remount-ro", str(image), str(mount)],
        check=True,
        capture_output=True,
    )
    try:
        yield mount
    finally:
        # The loop device goes with the mount (autoclear).
        subprocess.run(["umount", str(mount)], check=True, capture_output=True)


def fail_filesystem(mount: Path) -> None:
    """Make ext4 report an error, as a failing disk would: it turns itself read-only."""
    device = subprocess.run(
        ["findmnt", "-n", "-o", "SOURCE", str(mount)], check=True, capture_output=True, text=True
    ).stdout.strip()
    Path(f"/sys/fs/ext4/{Path(device).name}/trigger_fs_error").write_text("remediator test\n")


async def test_a_filesystem_turned_read_only_makes_the_daemon_unready_not_dead(
    ext4_fs: Path,
) -> None:
    # ext4 cannot be made writable again without a new mount (and fsck): the pod is
    # unready (no traffic) and stays alive (a restart on the same volume would not help).
    async with daemon_on(ext4_fs / "journal.db") as daemon:
        assert (await daemon.ready())[0] == 200
        assert (await daemon.post(storm(5)))[0] == 200
        fail_filesystem(ext4_fs)

        status, body = await daemon.ready()
        assert status == 503 and "not writable" in str(body["checks"])
        with pytest.raises(TemporaryError, match=r"I/O error|readonly"):
            await daemon.journal.check_writable()
        status, answer, retry_after = await daemon.post(storm(10))
        assert (status, retry_after) == (503, "3")
        assert "journal unavailable" in str(answer["error"])
        assert daemon.journal.alive()
        assert await daemon.live() == 200
        # What was acknowledged before the fault is still there to read.
        assert len((await daemon.journal.list_signals(limit=100)).items) == 5
