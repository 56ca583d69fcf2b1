"""Alert to first Kubernetes write (issue 18): from an Alertmanager webhook's arrival to
the first mutating request the kube-apiserver receives for the rollback it leads to.

Starts the test environment's real control plane (etcd, kube-apiserver, controller-manager,
scheduler, kwok; built in ~/.cache/remediator/testenv) with an audit log of every request
remediator's ServiceAccount makes, then for each run:

  - a namespace with N Deployments (``svc-000`` ...), each rolled out twice (image v1,
    revision 1; then v2, revision 2; kwok marks the pods ready), and the Role of
    docs/rbac.md bound to the ServiceAccount ``remediator/remediator``;
  - a daemon as a real process (``python -m remediator run --config ...``, this
    checkout's code, SQLite journal with synchronous=FULL, not a dry run) acting with that
    ServiceAccount's token, on the shipped rules with a catalog of the N services
    (rolling rollback) and two deploys of each journaled as the Kafka intake would
    (revision 1 a day ago, revision 2 eight minutes ago): a HighErrorRate alert plans a
    rollback to revision 1. One change to the shipped defaults: the circuit breaker,
    which opens after 10 automated actions an hour across all services, is raised so
    that N rollbacks can run;
  - one webhook per service (one firing HighErrorRate alert), open loop, one every
    ``--interval`` seconds; the client's wall-clock time just before each request;
  - the apiserver's audit log (``requestReceivedTimestamp``, microseconds, the same clock)
    gives each service's first mutating request (the executor creates the service's
    coordination Lease first) and its first write to the Deployment (the rollout-undo
    PATCH); the journal (received, decided, claimed, step started), the decider's log
    line of the plan (JSON log, microseconds) and the audit log split that into hops.

The default pace, two webhooks a second, keeps plans (about 1.2 s each on kwok) from
waiting for one of the executor's slots (kubernetes.max_concurrent_plans, 4): each
latency is then the alert's own. Every run prints how many webhooks found every slot
taken. The controller-manager and the scheduler may send 200 requests a second
(--controller-qps; Kubernetes' defaults are 20 and 50): at the defaults, rolling out
the 200 Deployments twice took two minutes, and each rollback's rollout took 3 s, so
that plans queued for the slots at this pace.

Afterwards every Deployment must be back on v1 (revision 3) with exactly one rollback
remediation that succeeded and exactly one PATCH from remediator.

  python bench/first_write.py                       # 200 services, two webhooks a second
  python bench/first_write.py --services 50 --interval 0.1 --runs 3 --json out.json
  python bench/first_write.py --workdir /tmp/fw     # keep the daemon's journal and log
  python bench/first_write.py --control-plane-dir /var/tmp/cp   # control plane on the disk

The control plane's files go to /dev/shm (tmpfs) unless --control-plane-dir says
otherwise: in a cluster, etcd and the apiserver write to their own machines' disks. On
this one machine, with them on the daemon's disk, the kernel's writeback of etcd's and
the audit log's pages queued the daemon's journal fsync (the 200 waits for it) for up
to 100 ms (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import copy
import itertools
import json
import os
import re
import signal
import sqlite3
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from intake import (
    REPO,
    TOKEN,
    cpu_seconds,
    free_port,
    histogram_quantile,
    machine,
    machine_cpu_seconds,
    own_cpu_seconds,
    percentile,
    ratio,
    run_main,
    say,
    wait_ready,
    work_dir,
)
from pipeline import seed_deploys
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(REPO))
from remediator.settings import KubernetesSettings
from tests.env.kube import KubePeer

TARGET_S = 0.050
SA_NAMESPACE, SA_NAME = "remediator", "remediator"
SA_USER = f"system:serviceaccount:{SA_NAMESPACE}:{SA_NAME}"
INSTANCE_ID = "bench-first-write"
IMAGE = "registry.example/app"
REVISION = "deployment.kubernetes.io/revision"
MUTATING = frozenset({"create", "update", "patch", "delete", "deletecollection"})
FINAL = frozenset({"succeeded", "failed", "needs_human", "cancelled", "rejected", "expired"})
# Every request remediator's ServiceAccount makes, nothing else (the controllers, kwok and
# this benchmark's own setup use the admin token): one JSON line each, once answered.
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata", "users": [SA_USER]}, {"level": "None"}],
}
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
SETUP_CONCURRENCY = 16


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


# -- the cluster -----------------------------------------------------------------------------
class Kube:
    """The benchmark's own admin client: plain HTTPS to the apiserver."""

    def __init__(self, endpoints: Mapping[str, Any]) -> None:
        self.server = str(endpoints["kube_server"])
        self.ca_file = str(endpoints["kube_ca"])
        self._token = str(endpoints["kube_token"])
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Kube:
        tls = ssl.create_default_context(cafile=self.ca_file)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=tls, limit=SETUP_CONCURRENCY + 4),
            headers={"Authorization": f"Bearer {self._token}"},
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        ok: Sequence[int] = (200, 201),
    ) -> dict[str, Any]:
        assert self._session is not None
        data = None if body is None else orjson.dumps(body)
        async with self._session.request(
            method, self.server + path, data=data, headers={"Content-Type": content_type}
        ) as resp:
            text = await resp.read()
            if resp.status not in ok:
                raise SystemExit(f"{method} {path}: {resp.status} {text[:300]!r}")
            result: dict[str, Any] = orjson.loads(text) if text else {}
            return result

    async def create(self, path: str, body: Mapping[str, Any]) -> None:
        """Create, or leave what exists (409) alone."""
        await self.call("POST", path, body, ok=(200, 201, 409))


def documented_rbac() -> list[dict[str, Any]]:
    """docs/rbac.md's first YAML block: ServiceAccount, Role, RoleBinding."""
    text = (REPO / "docs" / "rbac.md").read_text()
    block = re.search(r"^```yaml\n(.*?)^```", text, re.DOTALL | re.MULTILINE)
    assert block, "no yaml block in docs/rbac.md"
    docs = [d for d in yaml.safe_load_all(block.group(1)) if d]
    assert [d["kind"] for d in docs] == ["ServiceAccount", "Role", "RoleBinding"], docs
    return docs


async def service_account_token(kube: Kube) -> str:
    """remediator's ServiceAccount, as docs/rbac.md creates it, and a token for it."""
    account = documented_rbac()[0]
    assert account["metadata"] == {"name": SA_NAME, "namespace": SA_NAMESPACE}
    await kube.create("/api/v1/namespaces", {"metadata": {"name": SA_NAMESPACE}})
    await kube.create(f"/api/v1/namespaces/{SA_NAMESPACE}/serviceaccounts", account)
    answer = await kube.call(
        "POST",
        f"/api/v1/namespaces/{SA_NAMESPACE}/serviceaccounts/{SA_NAME}/token",
        {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 4 * 3600},
        },
    )
    return str(answer["status"]["token"])


def daemon_kubeconfig(path: Path, kube: Kube, token: str) -> Path:
    ca = base64.b64encode(Path(kube.ca_file).read_bytes()).decode()
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "bench",
                "clusters": [
                    {
                        "name": "kube",
                        "cluster": {"server": kube.server, "certificate-authority-data": ca},
                    }
                ],
                "users": [{"name": SA_NAME, "user": {"token": token}}],
                "contexts": [{"name": "bench", "context": {"cluster": "kube", "user": SA_NAME}}],
            }
        )
    )
    path.chmod(0o600)
    return path


def deployment(name: str, image: str) -> dict[str, Any]:
    # Each its own selector: the rollback lists ReplicaSets by it.
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }


def rolled_out(d: Mapping[str, Any], revision: str) -> bool:
    meta, spec, status = d["metadata"], d["spec"], d.get("status") or {}
    return (
        (meta.get("annotations") or {}).get(REVISION) == revision
        and status.get("observedGeneration", 0) >= meta["generation"]
        and status.get("updatedReplicas", 0) == spec["replicas"]
        and status.get("availableReplicas", 0) == spec["replicas"]
        and status.get("replicas", 0) == spec["replicas"]
    )


async def gathered(coros: Sequence[Any]) -> None:
    limit = asyncio.Semaphore(SETUP_CONCURRENCY)

    async def one(coro: Any) -> None:
        async with limit:
            await coro

    await asyncio.gather(*(one(c) for c in coros))


async def wait_rolled_out(
    kube: Kube, namespace: str, names: Sequence[str], revision: str, *, within: float = 300.0
) -> None:
    deadline = time.monotonic() + within
    while True:
        items = (await kube.call("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments"))[
            "items"
        ]
        done = {d["metadata"]["name"] for d in items if rolled_out(d, revision)}
        if done >= set(names):
            return
        if time.monotonic() > deadline:
            raise SystemExit(
                f"only {len(done)} of {len(names)} Deployments at revision "
                f"{revision} after {within:.0f}s"
            )
        await asyncio.sleep(0.5)


async def released_twice(kube: Kube, namespace: str, names: Sequence[str]) -> None:
    """The namespace, the documented Role bound to remediator, and every Deployment rolled
    out with v1, then v2."""
    await kube.create("/api/v1/namespaces", {"metadata": {"name": namespace}})
    # Pods are refused until the ServiceAccount controller made "default".
    for _ in range(600):
        found = await kube.call(
            "GET", f"/api/v1/namespaces/{namespace}/serviceaccounts/default", ok=(200, 404)
        )
        if found.get("kind") == "ServiceAccount":
            break
        await asyncio.sleep(0.1)
    _, role, binding = copy.deepcopy(documented_rbac())
    role["metadata"]["namespace"] = binding["metadata"]["namespace"] = namespace
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
    await kube.create(f"{rbac}/roles", role)
    await kube.create(f"{rbac}/rolebindings", binding)
    apps = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    await gathered([kube.create(apps, deployment(n, f"{IMAGE}:v1")) for n in names])
    await wait_rolled_out(kube, namespace, names, "1")
    say(f"  {len(names)} Deployments rolled out v1")
    patch = {
        "spec": {"template": {"spec": {"containers": [{"name": "app", "image": f"{IMAGE}:v2"}]}}}
    }
    await gathered(
        [
            kube.call(
                "PATCH", f"{apps}/{n}", patch, content_type="application/strategic-merge-patch+json"
            )
            for n in names
        ]
    )
    await wait_rolled_out(kube, namespace, names, "2")
    say(f"  {len(names)} Deployments rolled out v2 (revision 2)")


# -- the daemon ------------------------------------------------------------------------------
def rule_pack(directory: Path, namespace: str, names: Sequence[str]) -> Path:
    """The shipped rules, a catalog of ``names`` (rolling rollback), and the circuit
    breaker raised: it opens after 10 automated actions an hour across all services."""
    directory.mkdir(parents=True, exist_ok=True)
    shipped = REPO / "rules"
    (directory / "remediation.yaml").write_text((shipped / "remediation.yaml").read_text())
    defaults, count = re.subn(
        r"(?m)^(    max_actions:) 10\b", r"\1 100000", (shipped / "defaults.yaml").read_text()
    )
    assert count == 1, "defaults.yaml: circuit_breaker.max_actions not found"
    (directory / "defaults.yaml").write_text(defaults)
    catalog = {
        "services": {
            n: {"namespace": namespace, "workload": n, "rollback": {"strategy": "rolling"}}
            for n in names
        }
    }
    (directory / "catalog.yaml").write_text(yaml.safe_dump(catalog))
    return directory


class Daemon:
    """``python -m remediator run`` on a fresh SQLite journal, acting on the cluster."""

    def __init__(
        self, workdir: Path, *, kubeconfig: Path, rules: Path, extra_settings: Mapping[str, Any]
    ) -> None:
        self.workdir = workdir
        self.journal = workdir / "journal.db"
        self.log = workdir / "daemon.log"
        self.config = workdir / "config.yaml"
        settings: dict[str, Any] = {
            "kubernetes": {"kubeconfig": str(kubeconfig), "instance_id": INSTANCE_ID},
            # JSON lines: their timestamps have microseconds (the text format's, milliseconds).
            "log": {"format": "json", "level": os.environ.get("REMEDIATOR_LOG__LEVEL", "info")},
        }
        for key, value in extra_settings.items():
            group, _, name = key.partition(".")
            settings.setdefault(group, {})[name] = value
        self.config.write_text(yaml.safe_dump(settings))
        self.rules = rules
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("REMEDIATOR_")}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        env.update(
            {
                "PYTHONPATH": str(REPO),
                "REMEDIATOR_WEBHOOK_TOKEN": TOKEN,
                "KUBECONFIG": str(self.workdir / "no-kubeconfig"),
            }
        )
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "remediator",
                    "run",
                    "--config",
                    str(self.config),
                    "--listen",
                    f"127.0.0.1:{self.port}",
                    "--journal",
                    f"sqlite:///{self.journal}",
                    "--rules",
                    str(self.rules),
                ],
                env=env,
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def wait_ready(self, session: aiohttp.ClientSession) -> None:
        assert self.proc is not None
        await wait_ready(session, self.proc, self.url, logs=lambda: f"log: {self.log}")
        kube_line = next(
            (line for line in self.log.read_text().splitlines() if "kubernetes:" in line), ""
        )
        if "connected" not in kube_line:
            raise SystemExit(f"the daemon is not acting on the cluster: {kube_line!r}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(f"file:{self.journal}?mode=ro", uri=True)) as db:
            return db.execute(sql, params).fetchall()

    async def metrics(self, session: aiohttp.ClientSession) -> dict[str, dict[float, float]]:
        """Every histogram's cumulative buckets, by family name."""
        async with session.get(f"{self.url}/metrics") as resp:
            text = await resp.text()
        found: dict[str, dict[float, float]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    buckets = found.setdefault(family.name, {})
                    le = float(sample.labels["le"])
                    buckets[le] = buckets.get(le, 0.0) + sample.value
        return found


# -- the load -------------------------------------------------------------------------------
def alert_payload(service: str, namespace: str, run: int) -> bytes:
    """One Alertmanager group: HighErrorRate firing for one service (one pod)."""
    starts = (datetime.now(UTC) - timedelta(minutes=2)).isoformat()
    fp = f"{run:02x}{service}"
    return orjson.dumps(
        {
            "version": "4",
            "groupKey": f"{{}}:{{alertname=HighErrorRate,service={service}}}",
            "truncatedAlerts": 0,
            "status": "firing",
            "receiver": "remediator",
            "groupLabels": {"alertname": "HighErrorRate", "service": service},
            "commonLabels": {"alertname": "HighErrorRate", "service": service},
            "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093",
            "alerts": [
                {
                    "status": "firing",
                    "labels": {
                        "alertname": "HighErrorRate",
                        "service": service,
                        "namespace": namespace,
                        "severity": "critical",
                        "pod": f"{service}-{fp}",
                        "container": "app",
                        "job": "kubernetes-pods",
                    },
                    "annotations": {
                        "summary": "Error ratio above 5%",
                        "description": "Error ratio above 5% for 10 minutes.",
                        "runbook_url": "https://runbooks.example.com/high-error-rate",
                    },
                    "startsAt": starts,
                    "endsAt": "0001-01-01T00:00:00Z",
                    "generatorURL": "http://prometheus:9090/graph?g0.expr=x",
                    "fingerprint": fp,
                }
            ],
        }
    )


@dataclass
class Sent:
    at: float  # wall clock, just before the request was written
    answered: float = 0.0  # wall clock, the 200 read
    status: int = 0


async def send_all(
    session: aiohttp.ClientSession,
    url: str,
    bodies: Mapping[str, bytes],
    interval: float,
    progress: Callable[[], str],
) -> dict[str, Sent]:
    """One webhook per service, open loop: request i starts at i x interval, whatever
    the earlier ones are doing (as separate Alertmanager groups would)."""
    sent: dict[str, Sent] = {}

    async def one(service: str, body: bytes) -> None:
        record = sent[service] = Sent(at=time.time())
        async with session.post(f"{url}/api/v1/webhooks/alertmanager", data=body) as resp:
            await resp.read()
            record.answered, record.status = time.time(), resp.status

    tasks = []
    began = time.monotonic()
    last_report = began
    for i, (service, body) in enumerate(bodies.items()):
        await asyncio.sleep(max(0.0, began + i * interval - time.monotonic()))
        tasks.append(asyncio.create_task(one(service, body)))
        if time.monotonic() - last_report >= 5:
            last_report = time.monotonic()
            say(f"  sent {i + 1}/{len(bodies)}; {progress()}")
    await asyncio.gather(*tasks)
    return sent


# -- the measurements ------------------------------------------------------------------------
def parse_time(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


@dataclass
class Audited:
    """remediator's requests for one service, in the order the apiserver received them."""

    requests: list[dict[str, Any]] = field(default_factory=list)

    def since(self, wall: float) -> Audited:
        """Only the requests received at ``wall`` or later (the daemon also reads a
        service's replicas when it decides the seeded deploy events)."""
        return Audited([e for e in self.requests if at(e) >= wall])

    def first(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        return next((e for e in self.requests if predicate(e)), None)

    def first_of(self, verb: str, resource: str) -> dict[str, Any] | None:
        return self.first(lambda e: e["verb"] == verb and e["objectRef"]["resource"] == resource)

    def first_mutation(self) -> dict[str, Any] | None:
        return self.first(lambda e: e["verb"] in MUTATING)


def audited(log: Path, namespace: str, names: Sequence[str]) -> dict[str, Audited]:
    """Each service's requests from the audit log: its Lease, its Deployment (and its
    scale), and the ReplicaSet list by its selector."""
    by: dict[str, Audited] = {n: Audited() for n in names}
    with log.open() as fh:
        for line in fh:
            event = orjson.loads(line)
            ref = event.get("objectRef") or {}
            if event["user"]["username"] != SA_USER or ref.get("namespace") != namespace:
                continue
            name = ref.get("name") or ""
            if name.startswith("remediator-"):
                name = name.removeprefix("remediator-")
            elif not name:
                match = re.search(r"labelSelector=app%3D([a-z0-9-]+)", event["requestURI"])
                name = match.group(1) if match else ""
            if name in by:
                by[name].requests.append(event)
    for found in by.values():
        found.requests.sort(key=lambda e: e["requestReceivedTimestamp"])
    return by


def describe(event: Mapping[str, Any]) -> str:
    ref = event["objectRef"]
    what = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
    return f"{event['verb']} {what} ({event['responseStatus']['code']})"


def at(event: Mapping[str, Any] | None) -> float:
    assert event is not None
    return parse_time(event["requestReceivedTimestamp"])


def quantiles(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": percentile(ordered, 0.50),
        "p95": percentile(ordered, 0.95),
        "p99": percentile(ordered, 0.99),
        "max": ordered[-1],
    }


def shown(q: Mapping[str, float]) -> str:
    return " / ".join(ms(q[k]) for k in ("p50", "p95", "p99", "max")) + " ms"


PLANNED = re.compile(r"signal \S+ \(HighErrorRate, ([a-z0-9-]+)\): plan: rollback")


def daemon_times(daemon: Daemon) -> dict[str, dict[str, float]]:
    """Per service, the daemon's own timestamps of its rollback: the journal's (UTC text,
    microseconds), and when the decider logged the plan (just before its commit)."""
    rows = daemon.query(
        "SELECT r.service, s.received_at, d.decided_at, r.claimed_at, st.started_at "
        "FROM remediations r "
        "JOIN signals s ON s.id = r.signal_id JOIN decisions d ON d.remediation_id = r.id "
        "LEFT JOIN remediation_steps st ON st.remediation_id = r.id AND st.idx = 0 "
        "WHERE r.action = 'rollback'"
    )
    keys = ("received", "decided", "claimed", "step_started")
    times = {
        row[0]: {k: parse_time(v) for k, v in zip(keys, row[1:], strict=True) if v} for row in rows
    }
    for line in daemon.log.read_text().splitlines():
        if not line.startswith("{"):
            continue
        entry = orjson.loads(line)
        found = PLANNED.match(entry["msg"]) if entry["logger"].endswith(".decider") else None
        if found and found.group(1) in times:
            times[found.group(1)].setdefault("planned", parse_time(entry["ts"]))
    return times


def plans_in_flight(daemon: Daemon, moments: Sequence[float]) -> list[int]:
    """At each moment, how many plans were claimed and not finished: with every executor
    slot taken, a new plan waits for one, and its latency is no longer its own."""
    spans = [
        (parse_time(c), parse_time(f))
        for c, f in daemon.query(
            "SELECT claimed_at, finished_at FROM remediations WHERE action = 'rollback'"
        )
    ]
    return [sum(c <= t < f for c, f in spans) for t in moments]


class Busy:
    """Over a window: cores the whole machine kept busy, and this benchmark's share (the
    load generator, the daemon, the control plane); the rest was other work. And the
    highest 1-minute load average seen (``sample`` it now and then)."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self._pids = pids
        self._began = time.monotonic()
        self._machine = machine_cpu_seconds()
        self._ours = self._ours_now()
        self.load_before = self.load_max = os.getloadavg()[0]

    def _ours_now(self) -> float:
        return own_cpu_seconds() + sum(cpu_seconds(pid) for pid in self._pids())

    def sample(self) -> None:
        self.load_max = max(self.load_max, os.getloadavg()[0])

    def cores(self) -> tuple[float, float]:
        """(machine, this benchmark) busy cores since the window began."""
        elapsed = time.monotonic() - self._began
        return (
            (machine_cpu_seconds() - self._machine) / elapsed,
            (self._ours_now() - self._ours) / elapsed,
        )


@dataclass
class RunResult:
    services: int
    interval_s: float
    first_write: dict[str, float]  # webhook sent -> first mutating request, seconds
    first_deployment_write: dict[str, float]  # webhook sent -> the Deployment's PATCH
    first_request: dict[str, float]  # webhook sent -> first request of any kind
    answered: dict[str, float]  # webhook sent -> 200 read
    hops: dict[str, dict[str, float]]  # between consecutive points, seconds
    first_write_kinds: dict[str, int]
    metrics: dict[str, dict[str, float | None]]
    plan_seconds: dict[str, float]  # first step started -> plan finished
    executor_slots: int  # kubernetes.max_concurrent_plans
    in_flight_max: int  # most plans claimed and unfinished when a webhook was sent
    sent_while_full: int  # webhooks sent while every executor slot was taken
    load_average: tuple[float, float, float]  # 1-minute: before, highest during, after
    cores_busy: tuple[float, float]  # while sending and finishing: machine, this benchmark
    cores: int | None
    started_at: str


def verify(
    daemon: Daemon,
    deployments: Sequence[Mapping[str, Any]],
    names: Sequence[str],
    found: Mapping[str, Audited],
) -> list[str]:
    """What went wrong, if anything: each service rolled back once, and for real."""
    problems = []
    rows = daemon.query(
        "SELECT service, action, status FROM remediations WHERE status != 'skipped'"
    )
    per: dict[str, list[tuple[str, str]]] = {}
    for service, action, status in rows:
        per.setdefault(service, []).append((action, status))
    for name in names:
        if per.get(name) != [("rollback", "succeeded")]:
            problems.append(f"{name}: remediations {per.get(name)}")
        patches = [
            e
            for e in found[name].requests
            if e["verb"] == "patch" and e["objectRef"]["resource"] == "deployments"
        ]
        if len(patches) != 1:
            problems.append(f"{name}: {len(patches)} PATCHes of its Deployment")
    by_name = {d["metadata"]["name"]: d for d in deployments}
    for name in names:
        d = by_name.get(name)
        image = d["spec"]["template"]["spec"]["containers"][0]["image"] if d else None
        if d is None or image != f"{IMAGE}:v1" or not rolled_out(d, "3"):
            revision = (d["metadata"].get("annotations") or {}).get(REVISION) if d else None
            problems.append(f"{name}: Deployment on {image}, revision {revision}")
    return problems


# The path of one alert, in order: (label, where its time comes from). Audit points are
# the apiserver's receipt of the service's first such request after the webhook was sent.
PATH: tuple[tuple[str, str], ...] = (
    ("webhook sent", "sent"),
    ("received (journal)", "received"),
    ("decided (batch began)", "decided"),
    ("replicas read (GET scale)", "get deployments/scale"),
    ("plan logged (pre-commit)", "planned"),
    ("Lease GET", "get leases"),
    ("Lease created", "create leases"),
    ("claimed (journal)", "claimed"),
    ("step 0 started (journal)", "step_started"),
    ("Deployment GET", "get deployments"),
    ("ReplicaSets listed", "list replicasets"),
    ("Deployment PATCHed", "patch deployments"),
)


def point(source: str, sent: Sent, times: Mapping[str, float], mine: Audited) -> float | None:
    if source == "sent":
        return sent.at
    if " " not in source:
        return times.get(source)
    verb, _, resource = source.partition(" ")
    resource, _, sub = resource.partition("/")
    event = mine.first(
        lambda e: (
            e["verb"] == verb
            and e["objectRef"]["resource"] == resource
            and (e["objectRef"].get("subresource") or "") == sub
        )
    )
    return at(event) if event is not None else None


def hop_split(
    sent: Mapping[str, Sent], times: Mapping[str, Mapping[str, float]], mine: Mapping[str, Audited]
) -> dict[str, dict[str, float]]:
    """Each hop of PATH, over the services where both ends were seen."""
    hops: dict[str, dict[str, float]] = {}
    for (before, first), (after, second) in itertools.pairwise(PATH):
        values = []
        for service, record in sent.items():
            t0 = point(first, record, times.get(service, {}), mine[service])
            t1 = point(second, record, times.get(service, {}), mine[service])
            if t0 is not None and t1 is not None:
                values.append(t1 - t0)
        if values:
            hops[f"{before} -> {after}"] = {**quantiles(values), "n": float(len(values))}
    return hops


HISTOGRAMS = (
    "remediator_journal_latency_seconds",
    "remediator_decision_latency_seconds",
    "remediator_action_latency_seconds",
)
Buckets = Mapping[str, Mapping[float, float]]


def histogram_figures(before: Buckets, after: Buckets) -> dict[str, dict[str, float | None]]:
    """The daemon's own hop histograms over the webhooks only (the seeded deploy events,
    received a day and minutes before, are in ``before``), bucket-interpolated."""
    figures: dict[str, dict[str, float | None]] = {}
    for family in HISTOGRAMS:
        old = before.get(family, {})
        b = {le: n - old.get(le, 0.0) for le, n in after.get(family, {}).items()}
        figures[family] = {
            "count": b.get(float("inf"), 0.0),
            "p50": histogram_quantile(0.5, b),
            "p99": histogram_quantile(0.99, b),
        }
    return figures


async def one_run(
    args: argparse.Namespace,
    kube: Kube,
    kubeconfig: Path,
    workdir: Path,
    peer: KubePeer,
    run: int,
) -> RunResult:
    audit_log, peer_pids = Path(peer.endpoints["audit_log"]), peer.pids
    namespace = f"bench-fw-{run}-{int(time.time()) % 100000}"
    names = [f"svc-{i:03d}" for i in range(args.services)]
    rundir = workdir / f"run-{run}"
    rundir.mkdir(parents=True, exist_ok=True)
    say(f"run {run}: {args.services} services in namespace {namespace}; {machine()}")
    await released_twice(kube, namespace, names)
    rules = rule_pack(rundir / "rules", namespace, names)
    daemon = Daemon(rundir, kubeconfig=kubeconfig, rules=rules, extra_settings=dict(args.setting))
    await seed_deploys(daemon.journal, catalog=[(n, namespace) for n in names])
    daemon.start()
    try:
        async with aiohttp.ClientSession(headers=HEADERS) as session:
            await daemon.wait_ready(session)
            seeded = 2 * len(names)  # the deploy events, decided first
            for _ in range(1200):
                if daemon.query("SELECT count(*) FROM decisions")[0][0] >= seeded:
                    break
                await asyncio.sleep(0.1)
            else:
                raise SystemExit(
                    f"the seeded deploy events were not decided in 120 s: {daemon.log}"
                )
            say(
                f"  daemon ready (pid {daemon.pid}, "
                f"log {daemon.log}); sending one webhook every {args.interval:g}s"
            )
            bodies = {n: alert_payload(n, namespace, run) for n in names}
            metrics_before = await daemon.metrics(session)
            busy = Busy(lambda: [daemon.pid, *peer_pids()])
            started_at = datetime.now(UTC).isoformat(timespec="seconds")

            def progress() -> str:
                rows = daemon.query(
                    "SELECT status, count(*) FROM remediations "
                    "WHERE action = 'rollback' GROUP BY status"
                )
                busy.sample()
                return f"rollbacks {dict(rows)}; {machine()}"

            sent = await send_all(session, daemon.url, bodies, args.interval, progress)
            bad = {s: r.status for s, r in sent.items() if r.status != 200}
            if bad:
                raise SystemExit(f"webhooks not answered 200: {bad}")
            deadline = time.monotonic() + args.timeout
            last_report = time.monotonic()
            while True:
                rows = daemon.query("SELECT status FROM remediations WHERE action = 'rollback'")
                if len(rows) >= len(names) and all(r[0] in FINAL for r in rows):
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(
                        f"not every rollback finished in {args.timeout:.0f}s: "
                        f"{progress()}; log {daemon.log}"
                    )
                if time.monotonic() - last_report >= 5:
                    last_report = time.monotonic()
                    say(f"  all sent; {progress()}")
                await asyncio.sleep(0.2)
            cores_busy = busy.cores()
            load_after = os.getloadavg()[0]
            metrics = histogram_figures(metrics_before, await daemon.metrics(session))
    finally:
        daemon.stop()
    deployments = (await kube.call("GET", f"/apis/apps/v1/namespaces/{namespace}/deployments"))[
        "items"
    ]
    found = audited(audit_log, namespace, names)
    problems = verify(daemon, deployments, names, found)
    if problems:
        raise SystemExit(f"{len(problems)} problem(s): " + "; ".join(problems[:10]))
    times = daemon_times(daemon)
    mine = {n: found[n].since(sent[n].at) for n in names}
    first_write: list[float] = []
    first_deployment: list[float] = []
    first_request: list[float] = []
    kinds: dict[str, int] = {}
    for name in names:
        mutation, patch = mine[name].first_mutation(), mine[name].first_of("patch", "deployments")
        first_write.append(at(mutation) - sent[name].at)
        first_deployment.append(at(patch) - sent[name].at)
        first_request.append(at(mine[name].requests[0]) - sent[name].at)
        kind = describe(mutation) if mutation else "none"
        kinds[kind] = kinds.get(kind, 0) + 1
    finished = daemon.query(
        "SELECT r.finished_at, st.started_at FROM remediations r JOIN remediation_steps st "
        "ON st.remediation_id = r.id AND st.idx = 0 WHERE r.action = 'rollback'"
    )
    plan_seconds = quantiles([parse_time(f) - parse_time(s) for f, s in finished])
    slots = int(
        dict(args.setting).get(
            "kubernetes.max_concurrent_plans", KubernetesSettings().max_concurrent_plans
        )
    )
    in_flight = plans_in_flight(daemon, [r.at for r in sent.values()])
    return RunResult(
        services=len(names),
        interval_s=args.interval,
        first_write=quantiles(first_write),
        first_deployment_write=quantiles(first_deployment),
        first_request=quantiles(first_request),
        answered=quantiles([r.answered - r.at for r in sent.values()]),
        hops=hop_split(sent, times, mine),
        first_write_kinds=kinds,
        metrics=metrics,
        plan_seconds=plan_seconds,
        executor_slots=slots,
        in_flight_max=max(in_flight),
        sent_while_full=sum(n >= slots for n in in_flight),
        load_average=(busy.load_before, max(busy.load_max, load_after), load_after),
        cores_busy=cores_busy,
        cores=os.cpu_count(),
        started_at=started_at,
    )


def print_run(r: RunResult) -> None:
    say(
        f"  verified: every Deployment back on v1 (revision 3), one rollback each, "
        f"succeeded, one PATCH each; plans ran {ms(r.plan_seconds['p50'])} ms p50, "
        f"{ms(r.plan_seconds['max'])} ms max (first step to end)"
    )
    say(
        f"  plans in flight when a webhook was sent: at most {r.in_flight_max}; "
        f"{r.sent_while_full} of {r.services} sent while all {r.executor_slots} executor slots "
        "were taken (those plans queued)"
    )
    kinds = ", ".join(f"{kind} x{n}" for kind, n in r.first_write_kinds.items())
    say(f"  first mutating request: {kinds}")
    say(f"  latency from the webhook sent, p50 / p95 / p99 / max over {r.services} services:")
    say(f"    200 answered             {shown(r.answered)}")
    say(f"    first apiserver request  {shown(r.first_request)}")
    say(f"    first mutating request   {shown(r.first_write)}")
    say(f"    first Deployment write   {shown(r.first_deployment_write)}")
    say("  hops (each p50 / p95 / p99 / max):")
    for hop, q in r.hops.items():
        say(f"    {hop:<54} {shown(q)}")
    for family, figures in r.metrics.items():
        p50, p99 = (ms(v) if v is not None else "-" for v in (figures["p50"], figures["p99"]))
        say(
            f"  {family}: {figures['count'] or 0:.0f} observed, p50 ~{p50} ms, p99 ~{p99} ms "
            "(bucket-interpolated)"
        )
    say(
        f"  first Kubernetes write p99 {ms(r.first_write['p99'])} ms (target "
        f"{TARGET_S * 1000:g} ms): {ratio(r.first_write['p99'], TARGET_S)}; first Deployment "
        f"write p99 {ms(r.first_deployment_write['p99'])} ms: "
        f"{ratio(r.first_deployment_write['p99'], TARGET_S)}"
    )
    before, during, after = r.load_average
    say(
        f"  while sending and finishing: {r.cores_busy[0]:.2f} of {r.cores} cores busy, "
        f"{r.cores_busy[1]:.2f} by this benchmark (load generator, daemon, control plane), "
        f"the rest other work; load average (1 min) {before:.2f} before, up to {during:.2f}, "
        f"{after:.2f} after"
    )


def print_summary(runs: Sequence[RunResult]) -> None:
    say(f"{len(runs)} runs, median (min-max):")
    picks: tuple[tuple[str, Callable[[RunResult], float]], ...] = (
        ("first mutating request p99", lambda r: r.first_write["p99"]),
        ("first mutating request p50", lambda r: r.first_write["p50"]),
        ("first Deployment write p99", lambda r: r.first_deployment_write["p99"]),
        ("first Deployment write p50", lambda r: r.first_deployment_write["p50"]),
    )
    for label, pick in picks:
        values = [pick(r) for r in runs]
        say(f"  {label}: {ms(statistics.median(values))} ms ({ms(min(values))}-{ms(max(values))})")
    p99 = statistics.median(r.first_write["p99"] for r in runs)
    say(
        f"  first Kubernetes write p99 (median of runs) {ms(p99)} ms: {ratio(p99, TARGET_S)}; "
        f"{machine()}"
    )


# -- main ----------------------------------------------------------------------------------
async def bench(args: argparse.Namespace, peer: KubePeer, workdir: Path) -> list[RunResult]:
    runs = []
    async with Kube(peer.endpoints) as kube:
        token = await service_account_token(kube)
        kubeconfig = daemon_kubeconfig(workdir / "remediator.kubeconfig", kube, token)
        for run in range(1, args.runs + 1):
            result = await one_run(args, kube, kubeconfig, workdir, peer, run)
            print_run(result)
            runs.append(result)
    return runs


def setting(text: str) -> tuple[str, Any]:
    name, sep, value = text.partition("=")
    if not sep or "." not in name:
        raise argparse.ArgumentTypeError(
            "expected GROUP.NAME=VALUE, e.g. kubernetes.max_concurrent_plans=8"
        )
    return name, yaml.safe_load(value)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument(
        "--interval", type=float, default=0.5, help="seconds between webhooks (default 0.5)"
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=1,
        help="runs on the one cluster, each its own namespace and daemon",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds after the last webhook for every rollback to finish",
    )
    parser.add_argument(
        "--setting",
        type=setting,
        action="append",
        default=[],
        metavar="GROUP.NAME=VALUE",
        help="a daemon setting for an experiment (repeatable)",
    )
    parser.add_argument(
        "--workdir", type=Path, help="keep the daemon's journal, config and log here"
    )
    parser.add_argument(
        "--control-plane-dir",
        type=Path,
        help="keep the control plane's files (etcd's data, the audit log, the logs) here; "
        "default: a temporary directory on /dev/shm, removed afterwards (see above)",
    )
    parser.add_argument(
        "--controller-qps",
        type=int,
        default=200,
        help="the controller-manager's and scheduler's apiserver requests a second "
        "(default 200; Kubernetes' own defaults, 20 and 50, take minutes to roll out "
        "hundreds of Deployments)",
    )
    parser.add_argument("--json", type=Path, help="write every figure here")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    say(
        f"alert to first Kubernetes write: {args.services} services, one webhook every "
        f"{args.interval:g}s, {args.runs} run(s); {machine()}"
    )
    with contextlib.ExitStack() as stack:
        workdir = work_dir(stack, args.workdir, prefix="rmd-fw-")
        shm = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108 - tmpfs
        control_plane = work_dir(stack, args.control_plane_dir, prefix="rmd-fw-cp-", under=shm)
        say(f"  control plane files in {control_plane}")
        peer = KubePeer(
            workdir=control_plane,
            audit_policy=AUDIT_POLICY,
            controller_qps=args.controller_qps,
            progress=lambda line: say(f"  {line}"),
        )
        stack.callback(peer.stop)
        peer.endpoints = peer.start({})
        runs = asyncio.run(bench(args, peer, workdir))
    if len(runs) > 1:
        print_summary(runs)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "runs": [asdict(r) for r in runs],
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    run_main(main, stopped="the daemon and the control plane stopped")
