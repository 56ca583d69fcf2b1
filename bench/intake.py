"""Intake benchmark: Alertmanager-shaped load over HTTP against real daemon processes.

Starts ``python -m remediator run`` (this checkout's code) on loopback ports with a
fresh journal, drives it with concurrent webhook posts whose alerts all have new
idempotency keys (every alert is a real journal insert), waits until every
acknowledged alert is decided, and reports:

  - journaled alerts/s, requests/s and request latency (the client's view);
  - alert-to-decision latency p50/p95/p99, twice: from the daemons' own histogram
    ``remediator_decision_latency_seconds`` (receipt to journaled decision, summed over
    replicas, interpolated within buckets as Prometheus' histogram_quantile does) and
    exactly per alert from the journal (``decided_at - received_at``; decided_at is
    when its batch was decided, just before the commit);
  - how long deciding lagged behind the load (drain); how many cores the load
    generator, the daemons, the PostgreSQL server and the whole machine (other work
    included) kept busy during the load and during the drain; the load average.

Journals:

  sqlite           a SQLite file per run (WAL, synchronous=FULL: every 200 is durable)
  postgresql       a PostgreSQL server started for the benchmark from the test
                   environment's binaries (tests/env/postgres.py), durable (fsync,
                   synchronous_commit and full_page_writes on), a fresh database per run
  postgresql://... your server: a fresh database is created per run (the role needs
                   CREATEDB) and dropped afterwards; the password is never printed
  env              the same, the URL read from $REMEDIATOR_BENCH_DSN (out of argv and
                   shell history)

With ``--replicas N`` (PostgreSQL only) N daemons share the journal and the requests
go to them round-robin, as Alertmanager's HA pair or a Service spreads them. The
load generator shares the machine with the daemons and the server: the figures
include its cost, as issue 2 asks.

Examples:

  python bench/intake.py                # SQLite, 50 alerts/request, 16 clients, 15 s
  python bench/intake.py --journal postgresql --replicas 3 --runs 3
  python bench/intake.py --journal postgresql --rate 2000   # latency at a steady 2,000 alerts/s
  REMEDIATOR_BENCH_DSN=postgresql://bench:...@db:5432/postgres \\
      python bench/intake.py --journal env --replicas 3     # a server of yours, DSN from env
  python bench/intake.py --journal postgresql://bench:...@db:5432/postgres --json out.json
  python bench/intake.py --journal postgresql --pg-setting shared_buffers=256MB   # a server setting
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import re
import secrets
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Protocol
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import orjson
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
TOKEN = "bench-token"
DSN_ENV = "REMEDIATOR_BENCH_DSN"
LATENCY_METRIC = "remediator_decision_latency_seconds"
DECISIONS_METRIC = "remediator_decisions"
# Issue 18's intake targets on this machine, load generator included.
TARGET_ALERTS_PER_S = 30_000  # 50-alert requests from 16 clients
TARGET_SINGLE_REQUESTS_PER_S = 5_000  # 1-alert requests
# Closed-loop runs pre-build bodies for this rate: 2.5x the best figure measured so far.
CLOSED_LOOP_BODY_RATE = 30_000
CLK_TCK = os.sysconf("SC_CLK_TCK")


def say(message: str) -> None:
    print(message, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- load --------------------------------------------------------------------------------
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


def build_bodies(args: argparse.Namespace) -> list[bytes]:
    """Pre-built so the generator spends its CPU on HTTP, not on JSON; each run journals
    into a fresh journal, so every run may reuse them."""
    rate = args.rate or CLOSED_LOOP_BODY_RATE
    count = args.bodies or int(rate * args.seconds * 1.1 / args.alerts_per_request) + 1
    say(f"building {count:,} request bodies of {args.alerts_per_request} alerts ...")
    return [make_payload(n, args.alerts_per_request, n % args.concurrency) for n in range(count)]


@dataclass
class LoadResult:
    elapsed_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    accepted: int = 0
    ran_out_of_bodies: bool = False


class Load:
    """Posts bodies round-robin to the daemons and counts what they acknowledged."""

    def __init__(self, session: aiohttp.ClientSession, urls: Sequence[str]) -> None:
        self._session = session
        self._targets = itertools.cycle(urls)
        self.result = LoadResult()

    async def post(self, body: bytes) -> None:
        url = next(self._targets)
        started = time.perf_counter()
        async with self._session.post(f"{url}/api/v1/webhooks/alertmanager", data=body) as resp:
            answer = await resp.read()
        self.result.latencies.append(time.perf_counter() - started)
        self.result.statuses[resp.status] = self.result.statuses.get(resp.status, 0) + 1
        if resp.status == 200:
            self.result.accepted += orjson.loads(answer)["accepted"]

    async def closed_loop(self, bodies: Iterator[bytes], *, clients: int, seconds: float) -> None:
        """``clients`` senders, each posting its next body as soon as the last is answered."""
        deadline = time.perf_counter() + seconds

        async def client() -> None:
            while time.perf_counter() < deadline:
                body = next(bodies, None)
                if body is None:
                    self.result.ran_out_of_bodies = True
                    return
                await self.post(body)

        await asyncio.gather(*(client() for _ in range(clients)))

    async def open_loop(
        self, bodies: Iterator[bytes], *, requests_per_s: float, seconds: float, in_flight: int
    ) -> None:
        """A request every 1/requests_per_s seconds whether or not earlier ones were
        answered, as Alertmanager sends; at most ``in_flight`` unanswered (then the offered
        rate drops, which the report shows)."""
        started = time.perf_counter()
        slots = asyncio.Semaphore(in_flight)
        tasks: set[asyncio.Task[None]] = set()

        async def send(body: bytes) -> None:
            try:
                await self.post(body)
            finally:
                slots.release()

        for n in itertools.count():
            due = started + n / requests_per_s
            if due >= started + seconds:
                break
            body = next(bodies, None)
            if body is None:
                self.result.ran_out_of_bodies = True
                break
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            await slots.acquire()
            task = asyncio.create_task(send(body))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)


# -- the daemons' metrics ----------------------------------------------------------------
@dataclass
class Scrape:
    decided: int = 0
    buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count

    def add(self, text: str) -> None:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == f"{DECISIONS_METRIC}_total":
                    self.decided += int(sample.value)
                elif sample.name == f"{LATENCY_METRIC}_bucket":
                    le = float(sample.labels["le"])
                    self.buckets[le] = self.buckets.get(le, 0.0) + sample.value


async def scrape(session: aiohttp.ClientSession, urls: Sequence[str]) -> Scrape:
    """Every replica's metrics, summed (as ``sum by (le)`` would)."""
    total = Scrape()
    for url in urls:
        async with session.get(f"{url}/metrics") as resp:
            total.add(await resp.text())
    return total


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus' estimate: linear within the bucket the q-th observation falls in."""
    bounds = sorted(buckets.items())
    if not bounds or bounds[-1][1] == 0:
        return None
    rank = q * bounds[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in bounds:
        if count >= rank:
            if upper == float("inf"):
                return lower  # past the last finite bound: as Prometheus does
            return lower + (upper - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = upper, count
    return lower


def percentile(ordered: Sequence[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, max(0, int(len(ordered) * q + 0.5) - 1))]


# -- CPU accounting ----------------------------------------------------------------------
def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cpu_seconds(pid: int) -> float:
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK if fields else 0.0


def server_cpu_seconds(postmaster: int) -> float:
    """CPU of a PostgreSQL server: the postmaster and the live processes it forked
    (backends call setsid(), so the process group would miss them)."""
    total = cpu_seconds(postmaster)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields and int(fields[1]) == postmaster:
                total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def machine_cpu_seconds() -> float:
    """CPU every process on the machine used (others' work too), from /proc/stat."""
    with open("/proc/stat") as fh:
        ticks = [int(v) for v in fh.readline().split()[1:9]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks) - idle) / CLK_TCK


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


# -- journals ----------------------------------------------------------------------------
class Journal(Protocol):
    name: str
    server_pid: int | None  # for CPU accounting; None when the server is not ours

    def describe(self) -> str: ...
    async def prepare(self, run: int) -> str: ...  # the daemon's journal URL
    async def check(self) -> tuple[int, int, list[float]]: ...  # signals, decisions, waits
    async def discard(self) -> None: ...


class SqliteJournal:
    name = "sqlite"
    server_pid: int | None = None

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self._path = workdir / "journal.db"

    def describe(self) -> str:
        return "SQLite (WAL, synchronous=FULL)"

    async def prepare(self, run: int) -> str:
        self._path = self._workdir / f"journal-{run}.db"
        return f"sqlite:///{self._path}"

    async def check(self) -> tuple[int, int, list[float]]:
        with contextlib.closing(sqlite3.connect(self._path)) as db:
            signals = db.execute("SELECT count(*) FROM signals").fetchone()[0]
            waits = [
                row[0]
                for row in db.execute(
                    "SELECT (julianday(d.decided_at) - julianday(s.received_at)) * 86400.0 "
                    "FROM decisions d JOIN signals s ON s.seq = d.signal_seq"
                )
            ]
        return signals, len(waits), waits

    async def discard(self) -> None:
        await asyncio.to_thread(self._remove)

    def _remove(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self._path}{suffix}").unlink(missing_ok=True)


class PostgresJournal:
    """A fresh database per run on ``server_dsn``'s server, dropped after the run."""

    name = "postgresql"

    def __init__(
        self,
        server_dsn: str,
        *,
        server_pid: int | None,
        describe: str,
        settings: Sequence[tuple[str, str]] = (),
    ) -> None:
        self._server_dsn = server_dsn
        self._settings = settings
        self.server_pid = server_pid
        self._describe = describe
        self._database = ""

    def describe(self) -> str:
        shown_settings = ", ".join(f"{name}={value}" for name, value in self._settings)
        return (
            f"{self._describe}; database settings: {shown_settings}"
            if shown_settings
            else self._describe
        )

    def _dsn(self, database: str) -> str:
        return urlunsplit(urlsplit(self._server_dsn)._replace(path="/" + database))

    async def prepare(self, run: int) -> str:
        self._database = f"remediator_bench_{os.getpid()}_{run}_{secrets.token_hex(3)}"
        conn = await asyncpg.connect(self._server_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{self._database}"')
            for name, value in self._settings:  # names checked by parse_args
                literal = value.replace("'", "''")
                await conn.execute(f"ALTER DATABASE \"{self._database}\" SET {name} = '{literal}'")
        finally:
            await conn.close()
        return self._dsn(self._database)

    async def check(self) -> tuple[int, int, list[float]]:
        conn = await asyncpg.connect(self._dsn(self._database))
        try:
            signals = await conn.fetchval("SELECT count(*) FROM signals")
            rows = await conn.fetch(
                "SELECT extract(epoch FROM d.decided_at - s.received_at)::float8 AS waited "
                "FROM decisions d JOIN signals s ON s.seq = d.signal_seq"
            )
        finally:
            await conn.close()
        return int(signals), len(rows), [float(r["waited"]) for r in rows]

    async def discard(self) -> None:
        if not self._database:
            return
        conn = await asyncpg.connect(self._server_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{self._database}" WITH (FORCE)')
        finally:
            await conn.close()


def shown(dsn: str) -> str:
    """host:port/db, never the credentials."""
    parts = urlsplit(dsn)
    return f"{parts.hostname}:{parts.port or 5432}{parts.path}"


@contextlib.contextmanager
def test_env_server(
    workdir: Path, settings: Sequence[tuple[str, str]]
) -> Iterator[PostgresJournal]:
    """A durable PostgreSQL from the test environment's binaries, stopped afterwards."""
    sys.path.insert(0, str(REPO))
    from tests.env.postgres import PostgresPeer  # the repository's own test environment

    # As root the server runs as an unprivileged user, who must reach its data dir.
    workdir.chmod(0o755)
    peer = PostgresPeer(durable=True, workdir=workdir, progress=lambda m: say(f"  {m}"))
    try:
        say("starting a durable PostgreSQL for the benchmark ...")
        endpoints = peer.start({})
        postmaster = peer.processes[0].pid
        version = endpoints["versions"]["postgresql"]
        say(f"  PostgreSQL {version} on {shown(peer.dsn)}")
        yield PostgresJournal(
            peer.dsn,
            server_pid=postmaster,
            describe=f"PostgreSQL {version} (test environment's server, durable)",
            settings=settings,
        )
    finally:
        peer.stop()


@contextlib.contextmanager
def journal_for(spec: str, workdir: Path, settings: Sequence[tuple[str, str]]) -> Iterator[Journal]:
    if spec == "sqlite":
        yield SqliteJournal(workdir)
    elif spec == "postgresql":
        with test_env_server(workdir, settings) as journal:
            yield journal
    else:
        dsn = os.environ.get(DSN_ENV, "") if spec == "env" else spec
        if not dsn.startswith(("postgresql://", "postgres://")):
            raise SystemExit(f"--journal env: set {DSN_ENV} to a postgresql:// URL")
        yield PostgresJournal(
            dsn, server_pid=None, describe=f"PostgreSQL at {shown(dsn)}", settings=settings
        )


# -- daemons -----------------------------------------------------------------------------
class Daemons:
    """N daemon processes on one journal, each on its own port, logging to a file."""

    def __init__(self, workdir: Path, replicas: int) -> None:
        self._workdir = workdir
        self._replicas = replicas
        self.procs: list[subprocess.Popen[bytes]] = []
        self.urls: list[str] = []

    def start(self, journal_url: str, run: int) -> None:
        for n in range(self._replicas):
            port = free_port()
            env = {
                **os.environ,
                "PYTHONPATH": str(REPO),  # this checkout, whatever the venv has installed
                "REMEDIATOR_WEBHOOK_TOKEN": TOKEN,
                # Quiet by default; REMEDIATOR_LOG__LEVEL=debug (with --workdir) to look in.
                "REMEDIATOR_LOG__LEVEL": os.environ.get("REMEDIATOR_LOG__LEVEL", "warning"),
                # In the environment, not argv: a PostgreSQL URL holds a password.
                "REMEDIATOR_JOURNAL__URL": journal_url,
                "REMEDIATOR_KUBERNETES__INSTANCE_ID": f"bench-{n}",
                # No cluster: plans are recorded as dry runs, as in every figure here.
                "KUBECONFIG": str(self._workdir / "no-kubeconfig"),
            }
            env.pop("KUBERNETES_SERVICE_HOST", None)
            with open(self._workdir / f"daemon-{run}-{n}.log", "ab") as log:
                self.procs.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "remediator",
                            "run",
                            "--listen",
                            f"127.0.0.1:{port}",
                            "--rules",
                            str(REPO / "rules"),
                        ],
                        env=env,
                        cwd=self._workdir,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
            self.urls.append(f"http://127.0.0.1:{port}")

    async def wait_ready(self, session: aiohttp.ClientSession) -> None:
        for proc, url in zip(self.procs, self.urls, strict=True):
            await wait_ready(session, proc, url, logs=self.logs)

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(proc.pid) for proc in self.procs)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        failed = [p.returncode for p in self.procs if p.returncode not in (0, -signal.SIGTERM)]
        self.procs.clear()
        self.urls.clear()
        if failed:
            raise SystemExit(f"daemon exit codes {failed}; {self.logs()}")

    def logs(self) -> str:
        return f"logs in {self._workdir}/daemon-*.log"


# -- one run -----------------------------------------------------------------------------
@dataclass
class RunResult:
    alerts_per_s: float
    requests_per_s: float
    request_p50_ms: float
    request_p99_ms: float
    decision_p50_ms: float | None  # the daemons' histogram, interpolated
    decision_p95_ms: float | None
    decision_p99_ms: float | None
    journal_p50_ms: float  # exact, per alert, from the journal
    journal_p95_ms: float
    journal_p99_ms: float
    journal_max_ms: float
    drain_s: float  # after the last answer, until every acknowledged alert was decided
    decided_per_s: float  # over the load and the drain
    accepted: int
    statuses: dict[int, int]
    load_cores: dict[str, float]  # cores busy during the load, by process (and machine)
    drain_cores: dict[str, float]  # the same while deciding caught up
    elapsed_s: float
    load_average: tuple[float, float]  # 1-minute, before and after


async def measure(
    args: argparse.Namespace,
    urls: Sequence[str],
    bodies: Sequence[bytes],
    cpu: Callable[[], dict[str, float]],
) -> tuple[LoadResult, float, Scrape, list[dict[str, float]]]:
    """Drive the load, then wait until every acknowledged alert is decided; CPU seconds
    are read before the load, after it and once everything is decided."""
    connector = aiohttp.TCPConnector(limit=args.concurrency + 2 * len(urls))
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        load = Load(session, urls)
        cpu_before = cpu()
        started = time.perf_counter()
        progress = asyncio.create_task(report_progress(session, urls, load, started))
        try:
            if args.rate:
                await load.open_loop(
                    iter(bodies),
                    requests_per_s=args.rate / args.alerts_per_request,
                    seconds=args.seconds,
                    in_flight=args.concurrency,
                )
            else:
                await load.closed_loop(iter(bodies), clients=args.concurrency, seconds=args.seconds)
        finally:
            progress.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await progress
        load.result.elapsed_s = time.perf_counter() - started
        cpu_loaded = cpu()
        drain_started = time.perf_counter()
        metrics = await scrape(session, urls)
        while metrics.decided < load.result.accepted:
            if time.perf_counter() - drain_started > args.drain_timeout:
                raise SystemExit(
                    f"only {metrics.decided:,} of {load.result.accepted:,} alerts decided "
                    f"{args.drain_timeout:.0f}s after the load"
                )
            await asyncio.sleep(0.05)
            metrics = await scrape(session, urls)
        drain_s = time.perf_counter() - drain_started
        cpu_drained = cpu()
    return load.result, drain_s, metrics, [cpu_before, cpu_loaded, cpu_drained]


async def report_progress(
    session: aiohttp.ClientSession, urls: Sequence[str], load: Load, started: float
) -> None:
    while True:
        await asyncio.sleep(5)
        decided = (await scrape(session, urls)).decided
        elapsed = time.perf_counter() - started
        say(
            f"    {elapsed:4.0f}s  acknowledged {load.result.accepted:>9,} "
            f"({load.result.accepted / elapsed:,.0f}/s)  decided {decided:>9,}"
        )


async def one_run(
    args: argparse.Namespace, journal: Journal, workdir: Path, bodies: Sequence[bytes], run: int
) -> RunResult:
    load_before = os.getloadavg()[0]
    daemons = Daemons(workdir, args.replicas)
    try:
        daemons.start(await journal.prepare(run), run)
        async with aiohttp.ClientSession() as session:
            await daemons.wait_ready(session)
        say(f"  {args.replicas} daemon(s) ready; load average {load_before:.2f}")

        def cpu() -> dict[str, float]:
            used = {"load generator": own_cpu_seconds(), "daemons": daemons.cpu_seconds()}
            if journal.server_pid is not None:
                used["postgresql"] = server_cpu_seconds(journal.server_pid)
            used["machine"] = machine_cpu_seconds()
            return used

        result, drain_s, metrics, cpu_marks = await measure(args, daemons.urls, bodies, cpu)
        daemons.stop()
        signals, decisions, waits = await journal.check()
    finally:
        daemons.stop()
        await journal.discard()
    if result.ran_out_of_bodies:
        say("  WARNING: the load ran out of bodies before the deadline (raise --bodies)")
    if signals != result.accepted or decisions != result.accepted:
        raise SystemExit(
            f"MISMATCH: {result.accepted:,} acknowledged, {signals:,} journaled, "
            f"{decisions:,} decided"
        )
    return summarise(result, drain_s, metrics, cpu_marks, waits, load_before)


def summarise(
    result: LoadResult,
    drain_s: float,
    metrics: Scrape,
    cpu_marks: list[dict[str, float]],
    waits: list[float],
    load_before: float,
) -> RunResult:
    latencies = sorted(result.latencies)
    waits.sort()

    def cores(start: dict[str, float], end: dict[str, float], seconds: float) -> dict[str, float]:
        return {who: (end[who] - start[who]) / max(seconds, 1e-9) for who in end}

    def metric_ms(q: float) -> float | None:
        value = histogram_quantile(q, metrics.buckets)
        return None if value is None else value * 1000

    return RunResult(
        alerts_per_s=result.accepted / result.elapsed_s,
        requests_per_s=len(latencies) / result.elapsed_s,
        request_p50_ms=statistics.median(latencies) * 1000,
        request_p99_ms=percentile(latencies, 0.99) * 1000,
        decision_p50_ms=metric_ms(0.50),
        decision_p95_ms=metric_ms(0.95),
        decision_p99_ms=metric_ms(0.99),
        journal_p50_ms=percentile(waits, 0.50) * 1000,
        journal_p95_ms=percentile(waits, 0.95) * 1000,
        journal_p99_ms=percentile(waits, 0.99) * 1000,
        journal_max_ms=waits[-1] * 1000,
        drain_s=drain_s,
        decided_per_s=result.accepted / (result.elapsed_s + drain_s),
        accepted=result.accepted,
        statuses=result.statuses,
        load_cores=cores(cpu_marks[0], cpu_marks[1], result.elapsed_s),
        drain_cores=cores(cpu_marks[1], cpu_marks[2], drain_s),
        elapsed_s=result.elapsed_s,
        load_average=(load_before, os.getloadavg()[0]),
    )


# -- reporting ---------------------------------------------------------------------------
def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _cores(busy: dict[str, float]) -> str:
    return ", ".join(f"{who} {n:.2f}" for who, n in busy.items())


def print_run(r: RunResult) -> None:
    say(
        f"  journaled alerts/s {r.alerts_per_s:,.0f}  requests/s {r.requests_per_s:,.0f}  "
        f"statuses {r.statuses}\n"
        f"  request latency p50/p99     {_ms(r.request_p50_ms)} / {_ms(r.request_p99_ms)} ms\n"
        f"  alert-to-decision (metric)  p50/p95/p99 {_ms(r.decision_p50_ms)} / "
        f"{_ms(r.decision_p95_ms)} / {_ms(r.decision_p99_ms)} ms\n"
        f"  alert-to-decision (journal) p50/p95/p99 {_ms(r.journal_p50_ms)} / "
        f"{_ms(r.journal_p95_ms)} / {_ms(r.journal_p99_ms)} ms, max {_ms(r.journal_max_ms)}\n"
        f"  decided {r.accepted:,} ({r.decided_per_s:,.0f}/s), the last {r.drain_s:.1f}s "
        f"after the load\n"
        f"  cores busy during the load: {_cores(r.load_cores)}\n"
        f"  cores busy during the drain: {_cores(r.drain_cores)}\n"
        f"  load average {r.load_average[0]:.2f} -> {r.load_average[1]:.2f}"
    )


def machine() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{os.cpu_count()} cores, load average {one:.2f} {five:.2f} {fifteen:.2f}"


def ratio(measured: float, target: float, *, at_most: bool = True) -> str:
    value = measured / target
    met = value <= 1.0 if at_most else value >= 1.0
    return f"{value:.2f} of the target ({'met' if met else 'NOT met'})"


def against_target(args: argparse.Namespace, r: RunResult) -> str:
    """The run's figure against issue 18's intake targets (closed loop on this machine)."""
    if args.rate:
        return f"  no issue 18 target for an open loop; {machine()}"
    if args.alerts_per_request == 1:
        return (
            f"  issue 18 target: {TARGET_SINGLE_REQUESTS_PER_S:,} requests/s with 1-alert "
            f"requests: {ratio(r.requests_per_s, TARGET_SINGLE_REQUESTS_PER_S, at_most=False)}"
            f"; {machine()}"
        )
    if args.alerts_per_request == 50 and args.concurrency == 16:
        return (
            f"  issue 18 target: {TARGET_ALERTS_PER_S:,} journaled alerts/s with 50-alert "
            f"requests from 16 clients: {ratio(r.alerts_per_s, TARGET_ALERTS_PER_S, at_most=False)}"
            f"; {machine()}"
        )
    return f"  no issue 18 target for this request size and concurrency; {machine()}"


def print_summary(runs: Sequence[RunResult]) -> None:
    def spread(pick: Callable[[RunResult], float | None], unit: str = "") -> str:
        values = sorted(v for v in map(pick, runs) if v is not None)
        if not values:
            return "n/a"
        mid = statistics.median(values)
        return f"{_ms(mid)}{unit} ({_ms(values[0])}–{_ms(values[-1])})"

    say(f"summary over {len(runs)} run(s): median (min–max)")
    rows: list[tuple[str, Callable[[RunResult], float | None], str]] = [
        ("journaled alerts/s", lambda r: r.alerts_per_s, ""),
        ("request p50", lambda r: r.request_p50_ms, " ms"),
        ("request p99", lambda r: r.request_p99_ms, " ms"),
        ("decision p50 (metric)", lambda r: r.decision_p50_ms, " ms"),
        ("decision p95 (metric)", lambda r: r.decision_p95_ms, " ms"),
        ("decision p99 (metric)", lambda r: r.decision_p99_ms, " ms"),
        ("decision p50 (journal)", lambda r: r.journal_p50_ms, " ms"),
        ("decision p95 (journal)", lambda r: r.journal_p95_ms, " ms"),
        ("decision p99 (journal)", lambda r: r.journal_p99_ms, " ms"),
        ("decided alerts/s", lambda r: r.decided_per_s, ""),
        ("drain after the load", lambda r: r.drain_s * 1000, " ms"),
    ]
    for label, pick, unit in rows:
        say(f"  {label:<24} {spread(pick, unit)}")


# -- main --------------------------------------------------------------------------------
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--journal",
        default="sqlite",
        metavar="sqlite|postgresql|env|URL",
        help="which journal (see above; default: sqlite)",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="daemons sharing the journal (PostgreSQL only; default 1)",
    )
    parser.add_argument("--alerts-per-request", type=int, default=50)
    parser.add_argument(
        "--concurrency",
        type=int,
        default=16,
        help="clients (closed loop) or most requests in flight (--rate)",
    )
    parser.add_argument("--seconds", type=float, default=15.0, help="load per run")
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        metavar="ALERTS_PER_S",
        help="open loop at this many alerts/s (default: closed loop, "
        "as fast as the daemons answer)",
    )
    parser.add_argument("--runs", type=int, default=1, help="runs, each on a fresh journal")
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=300.0,
        help="most seconds to wait for every alert to be decided",
    )
    parser.add_argument(
        "--bodies",
        type=int,
        default=0,
        help="distinct request bodies (default: enough for --seconds)",
    )
    parser.add_argument(
        "--pg-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="PostgreSQL: ALTER DATABASE ... SET NAME = VALUE on each run's database, for "
        "experiments (e.g. jit=off); repeatable",
    )
    parser.add_argument("--json", type=Path, help="also write every run's figures here")
    parser.add_argument(
        "--workdir",
        type=Path,
        help="keep the daemons' logs and the server's data here "
        "(default: a temporary directory, removed)",
    )
    args = parser.parse_args()
    if args.replicas < 1 or args.runs < 1:
        parser.error("--replicas and --runs must be at least 1")
    if args.journal == "sqlite" and args.replicas > 1:
        parser.error("--replicas: a SQLite journal serves one daemon; use --journal postgresql")
    if args.journal == "sqlite" and args.pg_setting:
        parser.error("--pg-setting: only for a PostgreSQL journal")
    args.pg_settings = []
    for given in args.pg_setting:
        name, sep, value = given.partition("=")
        if not sep or not re.fullmatch(r"[a-z_][a-z0-9_.]*", name):
            parser.error(f"--pg-setting: expected NAME=VALUE, got {given!r}")
        args.pg_settings.append((name, value))
    return args


def shown_args(args: argparse.Namespace) -> dict[str, str]:
    given = {key: str(value) for key, value in vars(args).items()}
    if "://" in args.journal:
        given["journal"] = shown(args.journal)
    return given


# -- shared by the benchmark scripts -------------------------------------------------------
async def wait_ready(
    session: aiohttp.ClientSession,
    proc: subprocess.Popen[Any],
    url: str,
    *,
    logs: Callable[[], str],
) -> None:
    """Until the daemon at ``url`` answers /readyz with 200 (60 s at most); ``logs`` says
    where to look when it exits or never gets ready."""
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"daemon exited with {proc.returncode}; {logs()}")
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(f"{url}/readyz") as resp:
                if resp.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise SystemExit(f"daemon at {url} not ready in 60 s; {logs()}")


def work_dir(
    stack: contextlib.ExitStack, given: Path | None, *, prefix: str, under: str | None = None
) -> Path:
    """``given`` (created if missing, and kept), or a temporary directory (in ``under``,
    if given) that ``stack`` removes."""
    if given:
        given.mkdir(parents=True, exist_ok=True)
        return given.resolve()
    return Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix, dir=under)))


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_main(main: Callable[[], int], *, stopped: str) -> NoReturn:
    """Exit with ``main()``'s code. SIGTERM, like Ctrl-C, unwinds through every
    ``finally``, so the daemons and peers a benchmark started are stopped (then 130)."""
    signal.signal(signal.SIGTERM, _interrupted)
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        say(f"interrupted; {stopped}")
        raise SystemExit(130) from None


def main() -> int:
    args = parse_args()
    mode = f"open loop at {args.rate:,.0f} alerts/s" if args.rate else "closed loop"
    with contextlib.ExitStack() as stack:
        workdir = work_dir(stack, args.workdir, prefix="rmd-bench-")
        with journal_for(args.journal, workdir, args.pg_settings) as journal:
            described = journal.describe()
            say(
                f"{described}, {args.replicas} replica(s); {mode}, "
                f"{args.alerts_per_request} alerts/request, concurrency {args.concurrency}, "
                f"{args.seconds:g}s x {args.runs} run(s); {os.cpu_count()} cores"
            )
            bodies = build_bodies(args)
            runs = []
            for run in range(1, args.runs + 1):
                say(f"run {run}/{args.runs}")
                result = asyncio.run(one_run(args, journal, workdir, bodies, run))
                print_run(result)
                say(against_target(args, result))
                runs.append(result)
    if len(runs) > 1:
        print_summary(runs)
    if args.json:
        args.json.write_text(
            json.dumps(
                {"journal": described, "args": shown_args(args), "runs": [asdict(r) for r in runs]},
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    run_main(main, stopped="daemons and server stopped")
