"""The floor under intake: what this machine does with the same stack and no daemon.

A minimal server on the daemon's stack (uvloop, aiohttp, orjson, SQLite in WAL with
synchronous=FULL, a writer thread with group commit, a unique index on the alert id)
that does only what no durable intake can skip: read the body, parse it, hash each
alert's key and store the alert, then answer. No validation, no authentication, no
metrics, no deciding. Driven by bench/intake.py's load generator in this process,
closed loop, as ``make bench`` drives the daemon.

What it reaches is about the most one process on this stack journals here under this
load; the daemon's figure against it says what the daemon's own work costs
(docs/benchmarks.md).

  python bench/floor.py                         # 50 alerts/request, 16 clients, 10 s
  python bench/floor.py --alerts-per-request 1  # the trickle case
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import queue
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from intake import (
    REPO,
    TARGET_ALERTS_PER_S,
    TARGET_SINGLE_REQUESTS_PER_S,
    Load,
    cpu_seconds,
    free_port,
    machine,
    make_payload,
    own_cpu_seconds,
    ratio,
    run_main,
    say,
)

sys.path.insert(0, str(REPO))
from remediator.journal.sqlite.database import WAL_CHECKPOINT_PAGES, WRITER_CACHE_KIB

PATH = "/api/v1/webhooks/alertmanager"
BODY_RATE = 60_000  # alerts/s the pre-built bodies last for


# -- the server (runs as its own process: ``floor.py --serve PORT DB``) ----------------------
def serve(port: int, db: Path) -> None:
    import uvloop
    from aiohttp import web

    jobs: queue.SimpleQueue[tuple[asyncio.AbstractEventLoop, asyncio.Future[int], list]] = (
        queue.SimpleQueue()
    )

    def writer() -> None:
        conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        # The daemon's writer settings (remediator/journal/sqlite/database.py).
        conn.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
        conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")
        conn.execute("CREATE TABLE alerts (seq INTEGER PRIMARY KEY, id TEXT UNIQUE, body TEXT)")
        while True:
            batch = [jobs.get()]
            while True:  # group commit: everything queued shares one transaction
                try:
                    batch.append(jobs.get_nowait())
                except queue.Empty:
                    break
            conn.execute("BEGIN IMMEDIATE")
            counts = [
                conn.executemany(
                    "INSERT OR IGNORE INTO alerts (id, body) VALUES (?, ?)", rows
                ).rowcount
                for _, _, rows in batch
            ]
            conn.execute("COMMIT")
            for (loop, future, _), count in zip(batch, counts, strict=True):
                loop.call_soon_threadsafe(future.set_result, count)

    threading.Thread(target=writer, daemon=True).start()

    async def webhook(request: web.Request) -> web.Response:
        payload = orjson.loads(await request.read())
        receiver = payload["receiver"]
        rows = []
        for alert in payload["alerts"]:
            key = f"{receiver}|{alert['fingerprint']}|{alert['startsAt']}|{alert['status']}"
            rows.append((hashlib.sha256(key.encode()).hexdigest(), orjson.dumps(alert)))
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        jobs.put((asyncio.get_running_loop(), future, rows))
        accepted = await future
        return web.Response(body=orjson.dumps({"accepted": accepted}),
                            content_type="application/json")  # fmt: skip

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post(PATH, webhook)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# -- the load ---------------------------------------------------------------------------------
async def drive(url: str, args: argparse.Namespace, server_pid: int) -> None:
    per = args.alerts_per_request
    bodies = (make_payload(n, per, n % args.concurrency) for n in range(10**9))
    connector = aiohttp.TCPConnector(limit=args.concurrency + 2)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(100):
            try:
                async with session.get(url) as resp:
                    await resp.read()
                break
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
        # Bodies are built ahead (as intake.py does), so building them is not timed.
        ahead = [next(bodies) for _ in range(int(BODY_RATE / per * args.seconds) + 100)]
        load = Load(session, [url])
        own, server = own_cpu_seconds(), cpu_seconds(server_pid)
        started = time.perf_counter()
        await load.closed_loop(iter(ahead), clients=args.concurrency, seconds=args.seconds)
        elapsed = time.perf_counter() - started
        own, server = own_cpu_seconds() - own, cpu_seconds(server_pid) - server
    result = load.result
    if result.ran_out_of_bodies:
        say(f"  WARNING: the load ran out of bodies (more than {BODY_RATE:,} alerts/s)")
    alerts_per_s, requests_per_s = result.accepted / elapsed, len(result.latencies) / elapsed
    say(f"  journaled alerts/s {alerts_per_s:,.0f}  requests/s {requests_per_s:,.0f}  "
        f"statuses {result.statuses}")  # fmt: skip
    say(f"  cores busy: server {server / elapsed:.2f}, load generator {own / elapsed:.2f}; "
        f"server CPU {server / max(result.accepted, 1) * 1e6:.0f} µs an alert, "
        f"{server / max(len(result.latencies), 1) * 1e6:.0f} µs a request")  # fmt: skip
    if per == 1:
        target = f"{ratio(requests_per_s, TARGET_SINGLE_REQUESTS_PER_S, at_most=False)}"
        say(f"  issue 18's 1-alert target ({TARGET_SINGLE_REQUESTS_PER_S:,} requests/s) "
            f"for this floor: {target}; {machine()}")  # fmt: skip
    elif per == 50 and args.concurrency == 16:
        target = f"{ratio(alerts_per_s, TARGET_ALERTS_PER_S, at_most=False)}"
        say(f"  issue 18's target ({TARGET_ALERTS_PER_S:,} alerts/s) for this floor: "
            f"{target}; {machine()}")  # fmt: skip
    else:
        say(f"  {machine()}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--alerts-per-request", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), Path(args.serve[1]))
        return 0
    say(f"floor: the stack alone, {args.alerts_per_request} alerts/request, "
        f"concurrency {args.concurrency}, {args.seconds:g}s; {os.cpu_count()} cores")  # fmt: skip
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="rmd-floor-") as tmp:
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(port), str(Path(tmp) / "floor.db")]
        )
        try:
            asyncio.run(drive(f"http://127.0.0.1:{port}", args, server.pid))
        finally:
            server.terminate()
            server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    run_main(main, stopped="the server stopped")
