"""Intake benchmark: Alertmanager-shaped load over HTTP against a real daemon process.

Starts ``python -m remediator run`` on a loopback port with a fresh SQLite journal
(WAL, synchronous=FULL: every 200 is durable), then drives it with concurrent
webhook posts whose alerts all have new idempotency keys, so every alert is a real
journal insert. Reports journaled alerts/s, requests/s and request latency.

    python bench/intake.py                       # defaults below
    python bench/intake.py --alerts-per-request 100 --concurrency 32 --seconds 20

The load generator shares the machine with the daemon (2 cores here): the figure
includes its cost, as the target in issue 2 asks.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

REPO = Path(__file__).resolve().parent.parent
TOKEN = "bench-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_payload(request_no: int, alerts: int, worker: int) -> bytes:
    """A realistic group: ~800 B per alert, like the unit tests' storm."""
    items = []
    for i in range(alerts):
        fp = f"{worker:02x}{request_no:08x}{i:04x}"
        items.append(
            {
                "status": "firing",
                "labels": {
                    "alertname": "HighErrorRate",
                    "service": f"svc-{i % 40}",
                    "namespace": "shop",
                    "severity": "critical",
                    "pod": f"svc-{i % 40}-{fp}",
                    "container": "app",
                    "instance": f"10.0.{i % 250}.{request_no % 250}:8080",
                    "job": "kubernetes-pods",
                },
                "annotations": {
                    "summary": "Error ratio above 5%",
                    "description": "Error ratio above 5% for 10 minutes; check recent deploys.",
                    "runbook_url": "https://runbooks.example.com/high-error-rate",
                },
                "startsAt": "2026-11-27T10:00:00.123456789Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus:9090/graph?g0.expr=x",
                "fingerprint": fp,
            }
        )
    return orjson.dumps(
        {
            "version": "4",
            "groupKey": f"{{}}:{{worker={worker}}}",
            "truncatedAlerts": 0,
            "status": "firing",
            "receiver": "remediator",
            "groupLabels": {"alertname": "HighErrorRate"},
            "commonLabels": {"alertname": "HighErrorRate"},
            "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093",
            "alerts": items,
        }
    )


async def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            if proc.poll() is not None:
                raise SystemExit(f"daemon exited with {proc.returncode}")
            try:
                async with session.get(f"{url}/readyz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit("daemon did not become ready")


async def drive(args: argparse.Namespace, url: str) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    accepted = 0
    # Pre-build bodies so the generator spends its CPU on HTTP, not on JSON.
    bodies = [
        [make_payload(n, args.alerts_per_request, w) for n in range(args.bodies_per_worker)]
        for w in range(args.concurrency)
    ]
    deadline = time.perf_counter() + args.seconds
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}

    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def worker(w: int) -> None:
            nonlocal accepted
            for n, body in enumerate(bodies[w]):
                if time.perf_counter() >= deadline:
                    return
                started = time.perf_counter()
                async with session.post(f"{url}/api/v1/webhooks/alertmanager", data=body) as resp:
                    answer = await resp.read()
                latencies.append(time.perf_counter() - started)
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
                if resp.status == 200:
                    accepted += orjson.loads(answer)["accepted"]
                del n

        started = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(args.concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "elapsed_s": elapsed,
        "requests": len(latencies),
        "statuses": statuses,
        "alerts_accepted": accepted,
        "alerts_per_s": accepted / elapsed,
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--alerts-per-request", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument(
        "--bodies-per-worker", type=int, default=0, help="default: enough for --seconds"
    )
    args = parser.parse_args()
    if not args.bodies_per_worker:
        # Enough unique bodies that no worker runs out before the deadline at 60k alerts/s.
        args.bodies_per_worker = max(
            20, int(60000 * args.seconds / args.alerts_per_request / args.concurrency)
        )

    with tempfile.TemporaryDirectory(prefix="remediator-bench-") as tmp:
        port = free_port()
        journal = Path(tmp) / "journal.db"
        env = {**os.environ, "REMEDIATOR_WEBHOOK_TOKEN": TOKEN, "REMEDIATOR_LOG__LEVEL": "warning"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "remediator", "run", "--listen", f"127.0.0.1:{port}",
             "--journal", f"sqlite:///{journal}", "--rules", str(REPO / "rules")],
            env=env, cwd=tmp,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            asyncio.run(wait_ready(url, proc))
            print(
                f"building {args.concurrency * args.bodies_per_worker} request bodies ...",
                flush=True,
            )
            result = asyncio.run(drive(args, url))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        rows = sqlite3.connect(journal).execute("SELECT count(*) FROM signals").fetchone()[0]
    result["journal_rows"] = rows
    print(
        f"alerts/request={args.alerts_per_request} concurrency={args.concurrency} "
        f"duration={result['elapsed_s']:.1f}s\n"
        f"  journaled alerts/s: {result['alerts_per_s']:,.0f}  (rows in journal: {rows:,})\n"
        f"  requests/s:         {result['requests_per_s']:,.0f}  statuses: {result['statuses']}\n"
        f"  latency p50/p99:    {result['p50_ms']:.1f} ms / {result['p99_ms']:.1f} ms"
    )
    if rows != result["alerts_accepted"]:
        print(
            f"MISMATCH: {result['alerts_accepted']} acknowledged but {rows} journaled",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
