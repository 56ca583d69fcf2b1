"""After intake: how fast alerts become decisions, whether the loop stays responsive in a
storm, and how much memory storms take. Each scenario runs the daemon as a real process
(``python -m remediator run``, this checkout's code, SQLite journal with
synchronous=FULL, the shipped rule pack, no cluster: plans are journaled as dry runs)
and drives it over loopback HTTP with Alertmanager v4 payloads, the load generator on
the same machine. Each prints the machine's core count and load average, and its figure
against issue 18's target as a ratio (below 1.0 for "at most" targets is met).

  end-to-end  20,000 alerts as 2,000 requests of 10 from 16 clients; the time from the
              last 200 to every alert decided (target: within 1 s)
  storm       10,000 firing alerts for one catalog service, 100 per request from 16
              clients, after two deploys of it: exactly one action must follow (a
              rollback, a dry run here); the event loop's lag p99 over the storm from
              the daemon's own remediator_event_loop_lag_seconds (target: 10 ms)
  memory      100,000 alerts in storms of 10,000 (the catalog's services in turn); the
              daemon's peak RSS (VmHWM; target: under 300 MiB)

  python bench/pipeline.py                 # all three (make bench runs them with intake)
  python bench/pipeline.py storm memory    # some of them
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sqlite3
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from intake import (
    REPO,
    TOKEN,
    Daemons,
    Load,
    histogram_quantile,
    machine,
    make_payload,
    percentile,
    ratio,
    run_main,
    say,
    work_dir,
)
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(REPO))
LAG_METRIC = "remediator_event_loop_lag_seconds"
STORM_SERVICE = "checkout"  # in the shipped catalog, namespace shop
CATALOG = (("checkout", "shop"), ("payments", "payments"), ("search", "search"),
           ("web", "web"))  # fmt: skip
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}

TARGET_DRAIN_S = 1.0
TARGET_LAG_P99_S = 0.010
TARGET_RSS_MIB = 300.0


# -- load ----------------------------------------------------------------------------------
def storm_payload(
    request_no: int, alerts: int, *, service: str, namespace: str, storm: int
) -> bytes:
    """One Alertmanager group of a storm: every alert firing for ``service``, each its own
    pod (a new fingerprint), as a bad release failing on every replica looks."""
    items = []
    for i in range(alerts):
        fp = f"{storm:04x}{request_no:06x}{i:04x}"
        items.append({
            "status": "firing",
            "labels": {"alertname": "HighErrorRate", "service": service, "namespace": namespace,
                       "severity": "critical", "pod": f"{service}-{fp}", "container": "app",
                       "instance": f"10.1.{i % 250}.{request_no % 250}:8080",
                       "job": "kubernetes-pods"},
            "annotations": {"summary": "Error ratio above 5%",
                            "description": "Error ratio above 5% for 10 minutes.",
                            "runbook_url": "https://runbooks.example.com/high-error-rate"},
            "startsAt": (datetime.now(UTC) - timedelta(minutes=2)).isoformat(),
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph?g0.expr=x",
            "fingerprint": fp,
        })  # fmt: skip
    return orjson.dumps({
        "version": "4", "groupKey": f"{{}}:{{alertname=HighErrorRate,service={service}}}",
        "truncatedAlerts": 0, "status": "firing", "receiver": "remediator",
        "groupLabels": {"alertname": "HighErrorRate", "service": service},
        "commonLabels": {"alertname": "HighErrorRate", "service": service},
        "commonAnnotations": {}, "externalURL": "http://alertmanager:9093", "alerts": items,
    })  # fmt: skip


async def seed_deploys(journal_path: Path, catalog: Sequence[tuple[str, str]] = CATALOG) -> None:
    """Two deploys of each catalog service (name, namespace), the second 8 minutes ago,
    journaled as the Kafka intake would (the only trusted history source): an alert now
    rolls back."""
    from remediator.domain.rules.events import signal_from_cloudevent
    from remediator.journal.sqlite import SqliteJournal

    now = datetime.now(UTC)
    journal = SqliteJournal(path=journal_path)
    await journal.open()
    try:
        events = []
        for service, namespace in catalog:
            for n, at in ((1, now - timedelta(days=1)), (2, now - timedelta(minutes=8))):
                events.append(signal_from_cloudevent({
                    "specversion": "1.0", "id": f"deploy-{service}-{n}", "source": "/cd/pipeline",
                    "type": "io.remediator.deployment.succeeded", "time": at.isoformat(),
                    "data": {"service": service, "namespace": namespace, "version": f"v1.{n}.0",
                             "revision": str(n), "previous_revision": str(n - 1)},
                }, received_at=at))  # fmt: skip
        await journal.record_signals(events)
    finally:
        await journal.close()


# -- the daemon ------------------------------------------------------------------------------
class Daemon:
    """One daemon on a fresh SQLite journal; its journal read directly (read-only)."""

    def __init__(self, workdir: Path, name: str) -> None:
        self.path = workdir / f"{name}.db"
        self.daemons = Daemons(workdir, 1)
        self.name = name

    async def __aenter__(self) -> Daemon:
        await seed_deploys(self.path)
        self.daemons.start(f"sqlite:///{self.path}", run=hash(self.name) % 1000)
        async with aiohttp.ClientSession() as session:
            await self.daemons.wait_ready(session)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.daemons.stop()

    @property
    def url(self) -> str:
        return self.daemons.urls[0]

    @property
    def pid(self) -> int:
        return self.daemons.procs[0].pid

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)) as db:
            return db.execute(sql, params).fetchall()

    def decided(self) -> int:
        return int(self.query("SELECT count(*) FROM decisions")[0][0])

    def rss_kib(self) -> tuple[int, int]:
        """VmRSS and VmHWM (the peak) of the daemon, KiB."""
        fields: dict[str, int] = {}
        with open(f"/proc/{self.pid}/status") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    fields[key] = int(value.split()[0])
        return fields["VmRSS"], fields["VmHWM"]

    async def lag_buckets(self, session: aiohttp.ClientSession) -> dict[float, float]:
        async with session.get(f"{self.url}/metrics") as resp:
            text = await resp.text()
        buckets: dict[float, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == f"{LAG_METRIC}_bucket":
                    buckets[float(sample.labels["le"])] = sample.value
        return buckets

    async def wait_decided(self, count: int, *, within: float = 300.0) -> float:
        """Poll the journal (not the daemon) until ``count`` decisions; when it got there."""
        deadline = time.perf_counter() + within
        while (decided := await asyncio.to_thread(self.decided)) < count:
            if time.perf_counter() > deadline:
                raise SystemExit(f"only {decided:,} of {count:,} decided after {within:.0f}s")
            await asyncio.sleep(0.01)
        return time.perf_counter()


async def post_all(session: aiohttp.ClientSession, url: str, bodies: Sequence[bytes],
                   *, clients: int) -> Load:  # fmt: skip
    load = Load(session, [url])
    await load.closed_loop(iter(bodies), clients=clients, seconds=3600)
    load.result.ran_out_of_bodies = False  # every body sent is the point here
    return load


def connector(clients: int) -> aiohttp.TCPConnector:
    return aiohttp.TCPConnector(limit=clients + 2)


# -- scenarios -------------------------------------------------------------------------------
async def end_to_end(workdir: Path, args: argparse.Namespace) -> dict[str, float]:
    bodies = [make_payload(n, 10, n % args.clients) for n in range(args.e2e_requests)]
    expected = 10 * len(bodies)
    say(f"end to end: {expected:,} alerts as {len(bodies):,} requests of 10, "
        f"{args.clients} clients; {machine()}")  # fmt: skip
    async with Daemon(workdir, "e2e") as daemon:
        before = await asyncio.to_thread(daemon.decided)  # the seeded deploys
        async with aiohttp.ClientSession(connector=connector(args.clients),
                                         headers=HEADERS) as session:  # fmt: skip
            started = time.perf_counter()
            load = await post_all(session, daemon.url, bodies, clients=args.clients)
            last_200 = time.perf_counter()
            accepted = load.result.accepted
            done = await daemon.wait_decided(before + accepted)
    if accepted != expected:
        raise SystemExit(f"only {accepted:,} of {expected:,} alerts acknowledged: "
                         f"{load.result.statuses}")  # fmt: skip
    drain = done - last_200
    elapsed = last_200 - started
    latencies = sorted(load.result.latencies)
    say(
        f"  sent in {elapsed:.2f}s ({accepted / elapsed:,.0f} alerts/s, request p50/p99 "
        f"{percentile(latencies, 0.5) * 1000:.1f} / {percentile(latencies, 0.99) * 1000:.1f} ms)"
    )
    say(f"  all {accepted:,} decided {drain:.2f}s after the last 200 "
        f"(target {TARGET_DRAIN_S:g}s): {ratio(drain, TARGET_DRAIN_S)}; {machine()}")  # fmt: skip
    return {"alerts_per_s": accepted / elapsed, "drain_s": drain}


async def storm_into(
    daemon: Daemon, session: aiohttp.ClientSession, *, alerts: int, per_request: int,
    clients: int, service: str, namespace: str, storm: int,
) -> tuple[int, float, float]:  # fmt: skip
    """One storm; acknowledged alerts, seconds until acknowledged and until decided."""
    bodies = [
        storm_payload(n, per_request, service=service, namespace=namespace, storm=storm)
        for n in range(alerts // per_request)
    ]
    before = await asyncio.to_thread(daemon.decided)
    started = time.perf_counter()
    load = await post_all(session, daemon.url, bodies, clients=clients)
    sent = time.perf_counter()
    done = await daemon.wait_decided(before + load.result.accepted)
    return load.result.accepted, sent - started, done - started


async def storm(workdir: Path, args: argparse.Namespace) -> dict[str, float]:
    alerts = args.storm_alerts
    say(f"storm: {alerts:,} firing alerts for {STORM_SERVICE}, {args.per_request} per request, "
        f"{args.clients} clients; {machine()}")  # fmt: skip
    async with Daemon(workdir, "storm") as daemon:
        async with aiohttp.ClientSession(connector=connector(args.clients),
                                         headers=HEADERS) as session:  # fmt: skip
            lag_before = await daemon.lag_buckets(session)
            accepted, sent_s, decided_s = await storm_into(
                daemon, session, alerts=alerts, per_request=args.per_request,
                clients=args.clients, service=STORM_SERVICE, namespace="shop", storm=0,
            )  # fmt: skip
            lag_after = await daemon.lag_buckets(session)
        actions = daemon.query(
            "SELECT status, action, count(*) FROM remediations WHERE service = ? "
            "AND status NOT IN ('skipped') GROUP BY status, action", STORM_SERVICE)  # fmt: skip
        skipped = daemon.query("SELECT reason, count(*) FROM decisions WHERE service = ? "
                               "GROUP BY reason", STORM_SERVICE)  # fmt: skip
    lag = {le: lag_after[le] - lag_before.get(le, 0.0) for le in lag_after}
    samples = lag.get(float("inf"), 0.0)
    p99 = histogram_quantile(0.99, lag) or 0.0
    p50 = histogram_quantile(0.50, lag) or 0.0
    count = sum(row[2] for row in actions)
    say(f"  {accepted:,} acknowledged in {sent_s:.2f}s, all decided after {decided_s:.2f}s")
    say(f"  actions: {count} ({', '.join(f'{a} {s}' for s, a, _ in actions) or 'none'}); "
        f"decisions by reason: {dict(skipped)}")  # fmt: skip
    say(f"  event-loop lag over the storm ({samples:.0f} probes): p50 {p50 * 1000:.1f} ms, "
        f"p99 {p99 * 1000:.1f} ms (target {TARGET_LAG_P99_S * 1000:g} ms): "
        f"{ratio(p99, TARGET_LAG_P99_S)}; {machine()}")  # fmt: skip
    if count != 1:
        say(f"  EXACTLY ONE ACTION NOT MET: {count}")
    return {"actions": count, "lag_p50_s": p50, "lag_p99_s": p99, "decided_s": decided_s}


async def memory(workdir: Path, args: argparse.Namespace) -> dict[str, float]:
    storms = args.memory_alerts // args.storm_alerts
    services = ", ".join(s for s, _ in CATALOG)
    say(f"memory: {storms * args.storm_alerts:,} alerts in {storms} storms of "
        f"{args.storm_alerts:,} ({services} in turn); {machine()}")  # fmt: skip
    async with Daemon(workdir, "memory") as daemon:
        start_rss, _ = daemon.rss_kib()
        peak_sampled = start_rss
        stop = asyncio.Event()

        async def sample() -> None:
            nonlocal peak_sampled
            while not stop.is_set():
                peak_sampled = max(peak_sampled, daemon.rss_kib()[0])
                await asyncio.sleep(0.1)

        sampler = asyncio.create_task(sample())
        async with aiohttp.ClientSession(connector=connector(args.clients),
                                         headers=HEADERS) as session:  # fmt: skip
            for n in range(storms):
                service, namespace = CATALOG[n % len(CATALOG)]
                accepted, _, decided_s = await storm_into(
                    daemon, session, alerts=args.storm_alerts, per_request=args.per_request,
                    clients=args.clients, service=service, namespace=namespace, storm=n + 1,
                )  # fmt: skip
                rss, hwm = daemon.rss_kib()
                say(f"  storm {n + 1}/{storms} ({service}): {accepted:,} decided in "
                    f"{decided_s:.1f}s; RSS {rss / 1024:.0f} MiB, "
                    f"peak {hwm / 1024:.0f} MiB")  # fmt: skip
        stop.set()
        await sampler
        end_rss, hwm = daemon.rss_kib()
    peak = max(hwm, peak_sampled) / 1024
    say(f"  RSS at start {start_rss / 1024:.0f} MiB, at the end {end_rss / 1024:.0f} MiB, "
        f"peak {peak:.0f} MiB (target under {TARGET_RSS_MIB:g} MiB): "
        f"{ratio(peak, TARGET_RSS_MIB)}; {machine()}")  # fmt: skip
    return {"peak_rss_mib": peak, "end_rss_mib": end_rss / 1024}


SCENARIOS = {"end-to-end": end_to_end, "storm": storm, "memory": memory}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("scenarios", nargs="*", choices=[[], *SCENARIOS], default=[],
                        help="which to run (default: all)")  # fmt: skip
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--e2e-requests", type=int, default=2000)
    parser.add_argument("--storm-alerts", type=int, default=10_000)
    parser.add_argument("--per-request", type=int, default=100)
    parser.add_argument("--memory-alerts", type=int, default=100_000)
    parser.add_argument("--workdir", type=Path, help="keep journals and logs here")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    chosen = args.scenarios or list(SCENARIOS)
    with contextlib.ExitStack() as stack:
        workdir = work_dir(stack, args.workdir, prefix="rmd-bench-")
        for name in chosen:
            asyncio.run(SCENARIOS[name](workdir, args))
    return 0


if __name__ == "__main__":
    run_main(main, stopped="the daemon stopped")
