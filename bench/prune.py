"""Prune benchmark: webhook latency while the journal forgets 1,000,000 old signals.

Fills a journal file with old signals (bulk insert, straight into SQLite), starts a
real IntakeApp over that journal in a second process (``prune.py serve``: the
journal's writer thread, WAL, synchronous=FULL, uvloop, as in the daemon), and
drives it with Alertmanager webhooks at a steady rate. After a baseline period it
asks the server to prune, keeps posting until the prune returns, and reports
webhook latency before and during the prune (also per 10 s of the prune), the
prune's throughput and the time each of its batches held the writer.

    python bench/prune.py                                  # 1,000,000 rows, defaults below
    python bench/prune.py --rows 400000 --rate 50
    python bench/prune.py --prune-batch-size 1000         # a lower ceiling on batch size
    python bench/prune.py prepare /tmp/old-1m.db           # prepare once ...
    python bench/prune.py --db /tmp/old-1m.db              # ... run on copies of it

The load generator shares the machine with the server (2 cores here).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson

# Reuse the intake benchmark's server start-up check and Alertmanager payloads.
from intake import TOKEN, free_port, make_payload, wait_ready

REPO = Path(__file__).resolve().parent.parent
RETENTION_SECONDS = 7 * 24 * 3600
WEBHOOK = "/api/v1/webhooks/alertmanager"


# -- preparing the journal ------------------------------------------------------------
def prepare(db: Path, rows: int) -> float:
    """Create the schema through the journal, then bulk-insert ``rows`` old signals."""
    sys.path.insert(0, str(REPO))
    from remediator.domain.signals import signal_id
    from remediator.journal.sqlite import INSERT_SIGNAL, SqliteJournal

    async def migrate() -> None:
        journal = SqliteJournal(path=db)
        await journal.open()
        await journal.close()

    asyncio.run(migrate())
    started = time.perf_counter()
    received_at = (datetime.now(UTC) - timedelta(days=30)).replace(tzinfo=None)
    stamp = received_at.isoformat(timespec="microseconds") + "Z"
    alert = orjson.loads(make_payload(0, 1, 0))["alerts"][0]
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")  # setup only; the server runs with FULL
    conn.execute("PRAGMA cache_size = -262144")

    def row(n: int) -> tuple[Any, ...]:
        key = f"alertmanager|remediator|old{n:08x}|{stamp}|firing"
        labels = {**alert["labels"], "pod": f"svc-{n % 40}-old{n:08x}"}
        body = {"labels": labels, "annotations": alert["annotations"], "raw": alert}
        return (signal_id(key), key, "alertmanager", "HighErrorRate", "firing",
                f"svc-{n % 40}", "shop", stamp, None, stamp,
                orjson.dumps(body).decode())  # fmt: skip

    # Every old signal was decided: its decision (about 300 B, as for an alert outside
    # the catalog) goes with it.
    explanation = (
        "no action (not_in_catalog): alertmanager alert HighErrorRate for shop/svc-{n}: "
        "service 'svc-{n}' is not in the catalog; remediator acts only on the catalog's "
        "services\nrule: high-error-rate-rollback"
    )

    def decision(seq: int, signal: tuple[Any, ...]) -> tuple[Any, ...]:
        return (seq, signal[0], signal[5], "no_action", "not_in_catalog",
                "high-error-rate-rollback", None, stamp,
                explanation.format(n=seq % 40))  # fmt: skip

    chunk = 50_000
    for start in range(0, rows, chunk):
        signals = [row(n) for n in range(start, min(rows, start + chunk))]
        conn.execute("BEGIN")
        conn.executemany(INSERT_SIGNAL, signals)
        conn.executemany(
            "INSERT INTO decisions (signal_seq, signal_id, service, outcome, reason, rule,"
            " remediation_id, decided_at, explanation) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (decision(start + i + 1, s) for i, s in enumerate(signals)),
        )
        conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return time.perf_counter() - started


# -- the server process ---------------------------------------------------------------
async def serve(args: argparse.Namespace) -> None:
    """IntakeApp over the prepared journal; prunes when told so on stdin."""
    sys.path.insert(0, str(REPO))
    from aiohttp import web

    from remediator.ingress.auth import Authenticator, WebhookCredential
    from remediator.ingress.http import IntakeApp, IntakeState
    from remediator.journal.sqlite import SqliteJournal
    from remediator.journal.sqlite import signals as journal_module
    from remediator.metrics import Metrics

    # Observe each prune batch's time on the writer (a wrapper, the batch is unchanged).
    batch_seconds: list[float] = []
    prune_batch = journal_module.prune_batch

    def timed_batch(*a: Any, **kw: Any) -> Any:
        batch = prune_batch(*a, **kw)
        batch_seconds.append(batch.seconds)
        return batch

    journal_module.prune_batch = timed_batch  # type: ignore[assignment]
    decision_seconds: list[float] = []
    prune_decisions = journal_module.prune_decisions_batch

    def timed_decisions(*a: Any, **kw: Any) -> Any:
        started = time.perf_counter()
        more = prune_decisions(*a, **kw)
        decision_seconds.append(time.perf_counter() - started)
        return more

    journal_module.prune_decisions_batch = timed_decisions  # type: ignore[assignment]

    journal = SqliteJournal(path=Path(args.db), prune_batch_size=args.prune_batch_size)
    await journal.open()
    intake = IntakeApp(
        journal=journal,
        metrics=Metrics(),
        auth=Authenticator(webhook=WebhookCredential(bearer_token=TOKEN)),  # ingest
        state=IntakeState(),
        service_labels=("service",),
        namespace_labels=("namespace",),
        body_limit_bytes=16 * 1024 * 1024,
        retry_after_seconds=5,
    )
    runner = web.AppRunner(intake.build(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.port, backlog=1024).start()
    try:
        while (command := (await asyncio.to_thread(sys.stdin.readline)).strip()) != "quit":
            if command == "prune":
                started = time.perf_counter()
                deleted = await journal.prune(older_than_seconds=RETENTION_SECONDS)
                seconds = time.perf_counter() - started
                batches = sorted(batch_seconds)
                decisions = sorted(decision_seconds)
                answer = {
                    "deleted": deleted,
                    "seconds": seconds,
                    "batches": len(batches),
                    "batch_p50_ms": batches[len(batches) // 2] * 1000,
                    "batch_p99_ms": batches[int(len(batches) * 0.99)] * 1000,
                    "batch_max_ms": batches[-1] * 1000,
                    "decision_batches": len(decisions),
                    "decision_seconds": sum(decisions),
                    "decision_batch_p50_ms": decisions[len(decisions) // 2] * 1000,
                    "decision_batch_max_ms": decisions[-1] * 1000,
                }
                print(orjson.dumps(answer).decode(), flush=True)
    finally:
        await runner.cleanup()
        await journal.close()


# -- the load generator ---------------------------------------------------------------
@dataclass
class Sample:
    started: float
    latency: float
    status: int


@dataclass
class Load:
    samples: list[Sample] = field(default_factory=list)
    errors: int = 0


async def post_at_rate(url: str, args: argparse.Namespace, load: Load, stop: asyncio.Event) -> None:
    """Open loop: one request every 1/rate s whatever the answers take (as Alertmanager)."""
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    interval = 1 / args.rate
    async with aiohttp.ClientSession(headers=headers) as session:

        async def one(n: int) -> None:
            body = make_payload(n, args.alerts_per_request, 1)
            started = time.perf_counter()
            try:
                async with session.post(f"{url}{WEBHOOK}", data=body) as resp:
                    await resp.read()
            except aiohttp.ClientError:
                load.errors += 1
                return
            load.samples.append(Sample(started, time.perf_counter() - started, resp.status))

        in_flight: set[asyncio.Task[None]] = set()
        next_at = time.perf_counter()
        n = 0
        while not stop.is_set():
            task = asyncio.create_task(one(n))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            n += 1
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        await asyncio.gather(*in_flight)


def latencies(summary: dict[str, Any]) -> str:
    """One line of a summary; a short prune may see no request at all."""
    if not summary["requests"]:
        return "no request was sent meanwhile"
    return (
        f"p50 {summary['p50_ms']:.1f} ms  p99 {summary['p99_ms']:.1f} ms  "
        f"max {summary['max_ms']:.1f} ms  ({summary['requests']} requests, {summary['statuses']})"
    )


def summary(samples: list[Sample]) -> dict[str, Any]:
    latencies = sorted(s.latency for s in samples)
    statuses: dict[int, int] = {}
    for s in samples:
        statuses[s.status] = statuses.get(s.status, 0) + 1
    if not latencies:
        return {"requests": 0, "statuses": statuses}
    return {
        "requests": len(latencies),
        "statuses": statuses,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000,
        "max_ms": latencies[-1] * 1000,
    }


def windows(samples: list[Sample], *, since: float, seconds: float) -> list[list[Sample]]:
    """The samples in consecutive windows of ``seconds`` from ``since`` (by send time)."""
    out: list[list[Sample]] = []
    for s in samples:
        index = int((s.started - since) // seconds)
        out.extend([] for _ in range(index + 1 - len(out)))
        out[index].append(s)
    return out


async def drive(
    args: argparse.Namespace, url: str, server: subprocess.Popen[str]
) -> dict[str, Any]:
    assert server.stdin is not None and server.stdout is not None
    load, stop = Load(), asyncio.Event()
    generator = asyncio.create_task(post_at_rate(url, args, load, stop))
    await asyncio.sleep(args.warmup_seconds)
    baseline_from = time.perf_counter()
    await asyncio.sleep(args.baseline_seconds)
    prune_from = time.perf_counter()
    server.stdin.write("prune\n")
    server.stdin.flush()
    answer = await asyncio.to_thread(server.stdout.readline)
    prune_until = time.perf_counter()
    stop.set()
    await generator
    result = orjson.loads(answer)
    during = [s for s in load.samples if prune_from <= s.started < prune_until]
    return {
        "baseline": summary([s for s in load.samples if baseline_from <= s.started < prune_from]),
        # Requests sent while the prune ran, however long they took to answer.
        "during_prune": summary(during),
        "windows": [summary(w) for w in windows(during, since=prune_from, seconds=10)],
        "client_errors": load.errors,
        **{key: value for key, value in result.items() if key.startswith(("batch", "decision"))},
        "deleted": result["deleted"],
        "prune_seconds": result["seconds"],
    }


async def ready(url: str, server: subprocess.Popen[str]) -> None:
    async with aiohttp.ClientSession() as session:
        await wait_ready(session, server, url, logs=lambda: "its errors are above")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command")
    server_args = sub.add_parser("serve", help="(internal) the server process")
    server_args.add_argument("--db", required=True)
    server_args.add_argument("--port", type=int, required=True)
    server_args.add_argument("--prune-batch-size", type=int, required=True)
    prepare_args = sub.add_parser("prepare", help="only write a journal of old signals")
    prepare_args.add_argument("path", type=Path)
    prepare_args.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rows", type=int, default=1_000_000, help="old signals to prune")
    parser.add_argument("--rate", type=float, default=50.0, help="webhook requests per second")
    parser.add_argument("--alerts-per-request", type=int, default=10)
    parser.add_argument("--prune-batch-size", type=int, default=5000)
    parser.add_argument("--warmup-seconds", type=float, default=2.0)
    parser.add_argument("--baseline-seconds", type=float, default=20.0)
    parser.add_argument("--db", type=Path, help="reuse (a copy of) this prepared journal")
    parser.add_argument("--settle-seconds", type=float, default=15.0)
    args = parser.parse_args()

    if args.command == "serve":
        import uvloop

        uvloop.install()
        asyncio.run(serve(args))
        return 0
    if args.command == "prepare":
        print(f"preparing {args.rows:,} old signals in {args.path} ...", flush=True)
        print(f"  prepared in {prepare(args.path, args.rows):.1f} s", flush=True)
        return 0

    with tempfile.TemporaryDirectory(prefix="remediator-bench-prune-") as tmp:
        db = Path(tmp) / "journal.db"
        if args.db is not None:
            subprocess.run(["cp", "--sparse=always", str(args.db), str(db)], check=True)
            print(f"copied {args.db}", flush=True)
        else:
            print(f"preparing {args.rows:,} old signals ...", flush=True)
            print(f"  prepared in {prepare(db, args.rows):.1f} s", flush=True)
        # Write back the copy's dirty pages first, and let the file system settle (with
        # online discard, the previous run's deleted gigabyte is trimmed meanwhile): the
        # server's fsyncs would otherwise wait for that writeback, not for its own work.
        os.sync()
        time.sleep(args.settle_seconds)
        size_mb = db.stat().st_size / 1e6
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, __file__, "serve", "--db", str(db), "--port", str(port),
             "--prune-batch-size", str(args.prune_batch_size)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            asyncio.run(ready(url, server))
            result = asyncio.run(drive(args, url, server))
        finally:
            with contextlib.suppress(BrokenPipeError, OSError):
                assert server.stdin is not None
                server.stdin.write("quit\n")
                server.stdin.close()
            server.wait(timeout=60)
        cutoff = datetime.now(UTC) - timedelta(seconds=RETENTION_SECONDS)
        with contextlib.closing(sqlite3.connect(db)) as conn:
            left = conn.execute(
                "SELECT count(*) FROM signals WHERE received_at < ?",
                (cutoff.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z",),
            ).fetchone()[0]
            decisions_left = conn.execute(
                "SELECT count(*) FROM decisions WHERE signal_seq NOT IN (SELECT seq FROM signals)"
            ).fetchone()[0]
    base, during = result["baseline"], result["during_prune"]
    print(
        f"journal {size_mb:,.0f} MB, prune batch {args.prune_batch_size:,}, "
        f"load {args.rate:g} requests/s x {args.alerts_per_request} alerts\n"
        f"  pruned:           {result['deleted']:,} rows in {result['prune_seconds']:.1f} s "
        f"({result['deleted'] / result['prune_seconds']:,.0f} rows/s); old rows left: {left:,}\n"
        f"  prune batches:    {result['batches']:,}; time on the writer p50 "
        f"{result['batch_p50_ms']:.1f} ms  p99 {result['batch_p99_ms']:.1f} ms  "
        f"max {result['batch_max_ms']:.1f} ms\n"
        f"  their decisions:  {result['decision_batches']:,} batches in "
        f"{result['decision_seconds']:.1f} s; time on the writer p50 "
        f"{result['decision_batch_p50_ms']:.1f} ms  max {result['decision_batch_max_ms']:.1f} ms; "
        f"decisions of signals gone left: {decisions_left:,}\n"
        f"  webhooks before:  {latencies(base)}\n"
        f"  during prune:     {latencies(during)}\n"
        f"  client errors:    {result['client_errors']}"
    )
    for n, window in enumerate(result["windows"]):
        if window["requests"]:
            print(f"    prune +{n * 10:3d} s: p99 {window['p99_ms']:6.1f} ms  "
                  f"max {window['max_ms']:6.1f} ms  ({window['requests']} requests)")  # fmt: skip
    return 0 if result["deleted"] == args.rows or args.db is not None else 1


if __name__ == "__main__":
    raise SystemExit(main())
