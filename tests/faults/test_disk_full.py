"""The journal's filesystem fills up: webhooks answer 503 (Alertmanager retries),
/readyz turns unready, and both recover when space is freed. No 200 is lost.

The journal lives on a small tmpfs mounted for the test (the suite runs as root,
as CI does); a filler file takes the rest of the space.
"""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import orjson
import pytest

from tests.e2e.daemon import Daemon
from tests.e2e.test_alertmanager_intake import post, wait_for
from tests.unit.payloads import payload, storm

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small-fs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def write_until_full(out: BinaryIO, chunk_size: int) -> None:
    chunk = b"\0" * chunk_size
    while True:
        try:
            out.write(chunk)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            return


def fill(directory: Path) -> Path:
    """Take every free byte of the filesystem; return the filler file."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as out:  # unbuffered: nothing left to flush
        write_until_full(out, 65536)
        write_until_full(out, 512)  # the last partial chunk too
    return filler


def test_a_full_journal_filesystem_answers_503_and_recovers(small_fs: Path) -> None:
    d = Daemon(small_fs.parent / "daemon")
    d.journal = small_fs / "journal.db"
    d.start()
    try:
        accepted: set[str] = set()

        def send(batch: int) -> int:
            body = payload(storm(50, prefix=f"b{batch:04d}-")["alerts"])
            code, answer = post(d, orjson.dumps(body))
            if code == 200:
                accepted.update(answer["signal_ids"])
            return code

        assert send(0) == 200
        filler = fill(small_fs)
        # Pages SQLite already owns may take a few more writes; a full disk shows soon.
        codes = [send(i) for i in range(1, 60)]
        assert 503 in codes, codes
        assert set(codes) <= {200, 503}, codes
        status, body = d.get("/readyz", auth=False)
        assert status == 503, body
        assert "journal" in body["checks"]

        filler.unlink()
        wait_for(lambda: d.get("/readyz", auth=False)[0] == 200, timeout=30, what="ready again")
        assert send(1000) == 200
        journaled = {s["id"] for s in d.signals()}
        assert accepted <= journaled
        assert d.metric('remediator_webhook_requests_total{code="503"}') >= 1
    finally:
        if d.proc is not None:
            assert d.stop() == 0
