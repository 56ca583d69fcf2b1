"""Journal faults against the daemon as a process.

- The writer thread dies (a bug outside any one job, injected with the
  journal.writer failpoint): no caller waits forever, webhooks answer 503, /healthz
  fails so Kubernetes restarts the pod, and every alert answered 200 is still there
  after the restart.
- A prune of 400,000 old signals runs at start-up while webhooks arrive: it goes in
  bounded batches, so every webhook is answered 200 and /readyz never turns unready.
"""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from remediator.domain.signals import signal_id
from remediator.journal.sqlite import INSERT_SIGNAL, SqliteJournal
from tests.e2e.daemon import Daemon
from tests.e2e.test_alertmanager_intake import post
from tests.unit.payloads import alert, payload

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

OLD_ROWS = 400_000


def send(
    d: Daemon, service: str, namespace: str, fingerprint: str
) -> tuple[int, dict[str, object]]:
    body = payload([alert(service=service, namespace=namespace, fingerprint=fingerprint,
                          starts_at=datetime.now(UTC).isoformat())])  # fmt: skip
    return post(d, orjson.dumps(body))


def test_a_dead_journal_writer_fails_health_and_loses_no_acknowledged_alert(
    tmp_path: Path,
) -> None:
    d = Daemon(tmp_path / "daemon", extra_env={"REMEDIATOR_FAILPOINTS": "journal.writer:payments"})
    d.start()
    try:
        code, answer = send(d, "checkout", "shop", "before")
        assert code == 200, answer
        acknowledged = set(answer["signal_ids"])  # type: ignore[arg-type]
        code, answer = send(d, "payments", "payments", "kills-the-writer")
        assert code == 503, answer
        status, health = d.get("/healthz", auth=False)
        assert status == 503, health
        assert d.metric("remediator_journal_writer_up") == 0
        code, answer = send(d, "checkout", "shop", "after")  # answered at once, not hung
        assert code == 503, answer
        assert d.get("/readyz", auth=False)[0] == 503
        assert "journal writer stopped" in d.log_path.read_text()
    finally:
        assert d.stop() == 0
    # What Kubernetes does on a failing liveness probe: start it again.
    d.extra_env = {}
    d.start()
    try:
        assert d.get("/healthz", auth=False)[0] == 200
        journaled = {s["id"] for s in d.signals()}
        assert acknowledged <= journaled
        code, _ = send(d, "payments", "payments", "after-restart")
        assert code == 200
    finally:
        assert d.stop() == 0


def fill_with_old_signals(db: Path, rows: int) -> None:
    async def migrate() -> None:
        journal = SqliteJournal(path=db)
        await journal.open()
        await journal.close()

    asyncio.run(migrate())
    # 30 days old: far past the default retention of 7 days.
    stamp = (datetime.now(UTC) - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    body = orjson.dumps({"labels": {"alertname": "HighErrorRate"}, "annotations": {}}).decode()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")  # set-up only
    conn.execute("BEGIN")
    conn.executemany(
        INSERT_SIGNAL,
        (
            (
                signal_id(f"old|{n}"),
                f"old|{n}",
                "alertmanager",
                "HighErrorRate",
                "firing",
                f"svc-{n % 40}",
                "shop",
                stamp,
                None,
                stamp,
                body,
            )
            for n in range(rows)
        ),
    )
    conn.execute("COMMIT")
    conn.close()


def test_a_large_prune_at_start_does_not_hold_webhooks_or_readiness(tmp_path: Path) -> None:
    # Smaller batches than the default make the prune outlast start-up on any machine.
    d = Daemon(tmp_path / "daemon", extra_env={"REMEDIATOR_JOURNAL__PRUNE_BATCH_SIZE": "2000"})
    fill_with_old_signals(d.journal, OLD_ROWS)
    d.start()
    try:
        sent = 0
        while d.metric("remediator_journal_pruned_signals_total") < OLD_ROWS:
            code, answer = send(d, "checkout", "shop", f"during-{sent}")
            assert code == 200, (sent, answer)
            status, ready = d.get("/readyz", auth=False)
            assert status == 200, (sent, ready)
            sent += 1
            assert sent < 100_000, "the prune never finished"
        assert sent >= 1  # webhooks did arrive while it ran
        assert f"pruned {OLD_ROWS} signal(s)" in d.log_path.read_text()
        assert len(d.signals()) == sent
    finally:
        assert d.stop() == 0
