"""Issue 14: three replicas on one PostgreSQL journal, one Kafka consumer group and the
kwok cluster, while random replicas are SIGKILLed and SIGSTOPped during an alert storm
mixed with deploy events.

The chaos is drawn from a seeded random generator (``REMEDIATOR_CHAOS_SEED``, printed
on failure with every chaos event); the storm lasts as long as ``CHAOS_EVENTS`` kills
and stops take (about half a minute), and everything after it waits with bounded
pollers. Asserted afterwards, from the journal, the cluster
and the outcome topic:

- every alert answered 200 is journaled once;
- every signal is decided once;
- no mutation twice: one rollout undo per service, and the ReplicaSet revisions are
  exactly what one ``kubectl rollout undo`` leaves;
- every plan reaches a final state;
- each outcome event is published once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from kubernetes_asyncio import client
from kubernetes_asyncio.client.api_client import ApiClient

from tests.e2e.daemon import RULES, Daemon
from tests.integration.testenv.test_kube_smoke import NOT_READY_LABEL, eventually
from tests.unit.payloads import alert, payload

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

SERVICES = ("cart", "search", "checkout")
REPLICAS = 3
CHAOS_EVENTS = int(os.environ.get("REMEDIATOR_CHAOS_EVENTS", "12"))
POSTERS = 3
SEED = int(os.environ.get("REMEDIATOR_CHAOS_SEED", "14"))
REVISION = "deployment.kubernetes.io/revision"
FINAL = {"succeeded", "failed", "needs_human", "skipped", "dry-run", "rejected", "cancelled",
         "expired"}  # fmt: skip


@pytest.fixture
async def journal_dsn(postgres: Any) -> AsyncIterator[str]:
    """A new, empty database for the replicas' journal; dropped afterwards."""
    admin_dsn = postgres.endpoints["postgres_dsn"]
    name = f"chaos_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield admin_dsn.rsplit("/", 1)[0] + f"/{name}"
    admin = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def rules(tmp_path: Path, namespace: str) -> Path:
    directory = tmp_path / "rules"
    directory.mkdir()
    for name in ("defaults.yaml", "remediation.yaml"):
        shutil.copy(RULES / name, directory / name)
    catalog = "services:\n" + "".join(
        f"  {svc}:\n    namespace: {namespace}\n    workload: {svc}\n"
        "    rollback: {strategy: rolling}\n    scale: {min_replicas: 2, max_replicas: 6, step: 1}\n"
        for svc in SERVICES
    )
    (directory / "catalog.yaml").write_text(catalog)
    return directory


@dataclass
class Cluster:
    """The replicas, the chaos done to them, and which of them can answer now."""

    replicas: list[Daemon]
    events: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    down: set[int] = field(default_factory=set)  # killed or stopped

    def up(self) -> list[Daemon]:
        with self.lock:
            return [d for i, d in enumerate(self.replicas) if i not in self.down]

    def note(self, text: str) -> None:
        with self.lock:
            self.events.append(f"{time.monotonic():.2f} {text}")


@pytest.fixture
def cluster(
    tmp_path: Path, kube: Any, kafka: Any, rules: Path, journal_dsn: str
) -> Iterator[Cluster]:
    topic = f"deployments-{uuid.uuid4().hex[:8]}"
    outcomes = f"outcomes-{uuid.uuid4().hex[:8]}"
    replicas = []
    for i in range(REPLICAS):
        d = Daemon(
            tmp_path / f"replica-{i}",
            rules=rules,
            journal_url=journal_dsn,
            extra_env={
                "REMEDIATOR_KUBERNETES__KUBECONFIG": kube.endpoints["kubeconfig"],
                "REMEDIATOR_KUBERNETES__INSTANCE_ID": f"replica-{i}",
                "REMEDIATOR_KUBERNETES__ROLLOUT_TIMEOUT_SECONDS": "90",
                # Short enough that a stopped replica's Lease and claims move on within
                # the test's bounds, long enough to ride out a loaded 2-core machine.
                "REMEDIATOR_KUBERNETES__LEASE_DURATION_SECONDS": "15",
                "REMEDIATOR_JOURNAL__HEARTBEAT_SECONDS": "1",
                "REMEDIATOR_JOURNAL__CLAIM_STALE_SECONDS": "10",
                "REMEDIATOR_JOURNAL__RECOVERY_INTERVAL_SECONDS": "1",
                "REMEDIATOR_KAFKA__BOOTSTRAP_SERVERS": kafka.endpoints["kafka_bootstrap"],
                "REMEDIATOR_KAFKA__DEPLOY_TOPICS": topic,
                "REMEDIATOR_KAFKA__GROUP_ID": f"g-{topic}",
                "REMEDIATOR_KAFKA__OUTCOME_TOPIC": outcomes,
            },
        )
        d.topic = topic  # type: ignore[attr-defined]
        d.outcomes = outcomes  # type: ignore[attr-defined]
        d.start()
        replicas.append(d)
    c = Cluster(replicas)
    yield c
    for d in replicas:
        if d.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                d.proc.send_signal(signal.SIGCONT)
            d.stop()


def template(svc: str, image: str, *, ready: bool) -> client.V1PodTemplateSpec:
    labels = {"app": svc} | ({} if ready else {NOT_READY_LABEL: "true"})
    return client.V1PodTemplateSpec(
        metadata=client.V1ObjectMeta(labels=labels),
        spec=client.V1PodSpec(containers=[client.V1Container(name="app", image=image)]),
    )


def complete(d: Any) -> bool:
    s = d.status
    return (
        (s.observed_generation or 0) >= d.metadata.generation
        and (s.updated_replicas or 0) == d.spec.replicas
        and (s.available_replicas or 0) == d.spec.replicas
        and (s.replicas or 0) == d.spec.replicas
    )


def reader(apps: client.AppsV1Api, svc: str, namespace: str) -> Callable[[], Awaitable[Any]]:
    return lambda: apps.read_namespaced_deployment(svc, namespace)


async def bad_releases(apps: client.AppsV1Api, namespace: str) -> None:
    """Each service: v1 healthy (revision 1), then v2 whose pods never become Ready."""
    for svc in SERVICES:
        body = client.V1Deployment(
            metadata=client.V1ObjectMeta(name=svc),
            spec=client.V1DeploymentSpec(
                replicas=2,
                selector=client.V1LabelSelector(match_labels={"app": svc}),
                template=template(svc, f"registry.example/{svc}:v1", ready=True),
            ),
        )
        await apps.create_namespaced_deployment(namespace, body)
    for svc in SERVICES:
        await eventually(reader(apps, svc, namespace), complete, timeout=60, what=f"{svc} v1")
        patch = {"spec": {"template": template(svc, f"registry.example/{svc}:v2",
                                               ready=False).to_dict()}}  # fmt: skip
        await apps.patch_namespaced_deployment(svc, namespace, patch)
    for svc in SERVICES:
        await eventually(
            reader(apps, svc, namespace),
            lambda d: d.metadata.annotations.get(REVISION) == "2",
            timeout=30, what=f"{svc} revision 2",
        )  # fmt: skip


async def publish_deploys(kafka: Any, topic: str, namespace: str) -> None:
    """What the CD pipeline reports: revision 1 two hours ago, revision 2 now."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka.endpoints["kafka_bootstrap"])
    await producer.start()
    try:
        now = datetime.now(UTC)
        for svc in SERVICES:
            for revision, at in ((1, now - timedelta(hours=2)), (2, now)):
                event = {
                    "specversion": "1.0", "id": f"deploy-{namespace}-{svc}-{revision}",
                    "source": "ci/deployer", "type": "io.remediator.deployment.succeeded",
                    "time": at.isoformat(),
                    "data": {"service": svc, "namespace": namespace, "version": f"v{revision}",
                             "revision": str(revision), "previous_revision": str(revision - 1)},
                }  # fmt: skip
                await producer.send_and_wait(topic, orjson.dumps(event), key=svc.encode())
    finally:
        await producer.stop()


def post(daemon: Daemon, body: bytes) -> int:
    request = urllib.request.Request(  # noqa: S310 - loopback http
        daemon.webhook_url, data=body, method="POST",
        headers={"Authorization": f"Bearer {daemon.token}", "Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except OSError:  # refused (killed) or timed out (stopped): Alertmanager retries elsewhere
        return 0


def storm(cluster: Cluster, namespace: str, stop: threading.Event, worker: int,
          accepted: list[str]) -> None:  # fmt: skip
    """Alertmanager groups: a PodNotReady for a bad service among alerts nobody acts on,
    each alert with a fingerprint of its own; a group is retried until some replica
    answers 200, as Alertmanager does."""
    rng = random.Random(SEED * 100 + worker)
    n = 0
    while not stop.is_set():
        n += 1
        fingerprints = [f"w{worker}-{n}-{i}" for i in range(5)]
        alerts = [alert(name="PodNotReady", service=rng.choice(SERVICES), namespace=namespace,
                        fingerprint=fingerprints[0], starts_at=datetime.now(UTC).isoformat())]  # fmt: skip
        alerts += [
            alert(name="HighLatency", service=f"elsewhere-{rng.randrange(20)}",
                  namespace="other", fingerprint=fp, starts_at=datetime.now(UTC).isoformat())
            for fp in fingerprints[1:]
        ]  # fmt: skip
        body = orjson.dumps(payload(alerts))
        while True:
            up = cluster.up()
            if up and post(rng.choice(up), body) == 200:
                accepted.extend(fingerprints)
                break
            if stop.is_set() and not up:
                break
            time.sleep(0.05)


def chaos(cluster: Cluster, stop: threading.Event) -> None:
    """``CHAOS_EVENTS`` times, 1 to 2 s apart: SIGKILL a replica (restarted a moment
    later) or SIGSTOP one for 1 to 4 s; always at least one replica left answering.
    Then ends the storm."""
    rng = random.Random(SEED)
    try:
        for _ in range(CHAOS_EVENTS):
            time.sleep(rng.uniform(1.0, 2.0))
            strike(cluster, rng)
    finally:
        stop.set()


def strike(cluster: Cluster, rng: random.Random) -> None:
    candidates = [i for i in range(REPLICAS) if i not in cluster.down]
    if len(candidates) <= 1:
        return
    i = rng.choice(candidates)
    d = cluster.replicas[i]
    assert d.proc is not None
    with cluster.lock:
        cluster.down.add(i)
    if rng.random() < 0.5:
        cluster.note(f"SIGKILL replica-{i}")
        d.proc.kill()
        d.proc.wait(timeout=30)
        d.proc = None
        time.sleep(rng.uniform(0.2, 1.5))
        d.start()
        cluster.note(f"restarted replica-{i}")
    else:
        pause = rng.uniform(1.0, 4.0)
        cluster.note(f"SIGSTOP replica-{i} for {pause:.1f}s")
        d.proc.send_signal(signal.SIGSTOP)
        time.sleep(pause)
        d.proc.send_signal(signal.SIGCONT)
        cluster.note(f"SIGCONT replica-{i}")
    with cluster.lock:
        cluster.down.discard(i)


async def query(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def settled(dsn: str) -> dict[str, int]:
    [row] = await query(dsn, """
        SELECT (SELECT count(*) FROM signals) AS signals,
               (SELECT count(*) FROM decisions) AS decisions,
               (SELECT count(*) FROM remediations WHERE finished_at IS NULL
                  AND status NOT IN ('skipped', 'dry-run')) AS open_plans,
               (SELECT count(*) FROM outbox WHERE published_at IS NULL) AS unpublished
    """)  # fmt: skip
    return dict(row)


async def outcome_ids(kafka: Any, topic: str) -> list[str]:
    """Every record's CloudEvents id on the outcome topic, repeats included."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka.endpoints["kafka_bootstrap"],
        auto_offset_reset="earliest", enable_auto_commit=False, group_id=None,
    )  # fmt: skip
    await consumer.start()
    ids: list[str] = []
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=3000)
            if not batch:
                return ids
            for records in batch.values():
                ids += [orjson.loads(r.value)["id"] for r in records]
    finally:
        await consumer.stop()


async def test_three_replicas_survive_kill_and_stop_during_an_alert_storm(
    api: ApiClient, namespace: str, cluster: Cluster, kafka: Any, journal_dsn: str
) -> None:
    apps = client.AppsV1Api(api)
    first = cluster.replicas[0]
    await bad_releases(apps, namespace)
    await publish_deploys(kafka, first.topic, namespace)  # type: ignore[attr-defined]
    # One consumer group across the replicas: each deploy event journaled once.
    deploys = await eventually(
        lambda: query(journal_dsn, "SELECT key FROM signals WHERE source = 'kafka'"),
        lambda rows: len(rows) >= 2 * len(SERVICES), timeout=60, what="deploy events",
    )  # fmt: skip
    assert len(deploys) == 2 * len(SERVICES)

    stop = threading.Event()
    accepted: list[str] = []
    threads = [threading.Thread(target=storm, args=(cluster, namespace, stop, w, accepted))
               for w in range(POSTERS)]  # fmt: skip
    threads.append(threading.Thread(target=chaos, args=(cluster, stop)))
    for t in threads:
        t.start()
    try:
        await asyncio.to_thread(threads[-1].join, 120)  # the chaos ends the storm
    finally:
        stop.set()
        for t in threads:
            await asyncio.to_thread(t.join, 60)
    report = f"seed {SEED}; chaos:\n" + "\n".join(cluster.events)
    assert accepted, report

    state = await eventually(
        lambda: settled(journal_dsn),
        lambda s: s["decisions"] == s["signals"] and s["open_plans"] == 0 and not s["unpublished"],
        timeout=240, what="every signal decided, every plan ended, the outbox drained",
    )  # fmt: skip

    # Every alert answered 200 is journaled once (and nothing else came in).
    rows = await query(journal_dsn, "SELECT body FROM signals WHERE source = 'alertmanager'")
    stored = Counter(orjson.loads(r["body"])["raw"]["fingerprint"] for r in rows)
    assert set(stored) == set(accepted), report
    assert max(stored.values()) == 1, report
    assert state["signals"] == len(accepted) + 2 * len(SERVICES), (state, report)

    # Every signal decided once.
    per_signal = await query(journal_dsn, "SELECT signal_seq, count(*) AS n FROM decisions"
                                          " GROUP BY signal_seq HAVING count(*) > 1")  # fmt: skip
    assert per_signal == [], report

    # One rollback per service, carried out once, and the cluster as one undo leaves it.
    plans = await query(journal_dsn, "SELECT id, service, status FROM remediations"
                                     " WHERE action = 'rollback' AND status <> 'skipped'")  # fmt: skip
    assert sorted(r["service"] for r in plans) == sorted(SERVICES), (plans, report)
    assert all(r["status"] in FINAL for r in plans), (plans, report)
    undos = await query(journal_dsn, "SELECT remediation_id, count(*) AS n FROM remediation_steps"
                                     " WHERE kind = 'rollout_undo' AND status = 'succeeded'"
                                     " GROUP BY remediation_id")  # fmt: skip
    assert sorted(r["n"] for r in undos) == [1] * len(SERVICES), (undos, report)
    for svc in SERVICES:
        d = await apps.read_namespaced_deployment(svc, namespace)
        assert d.metadata.annotations[REVISION] == "3", (svc, report)
        assert d.spec.template.spec.containers[0].image == f"registry.example/{svc}:v1"
        rs = (await apps.list_namespaced_replica_set(
            namespace, label_selector=f"app={svc}")).items  # fmt: skip
        revisions = sorted(r.metadata.annotations[REVISION] for r in rs)
        assert revisions == ["2", "3"], (svc, revisions, report)

    # Each outcome event published once: the topic holds exactly the outbox's messages.
    published = await outcome_ids(kafka, first.outcomes)  # type: ignore[attr-defined]
    expected = await query(journal_dsn, "SELECT id FROM outbox WHERE channel = $1",
                           f"kafka:{first.outcomes}")  # type: ignore[attr-defined]  # fmt: skip
    repeats = {i: n for i, n in Counter(published).items() if n > 1}
    assert repeats == {}, (len(published), len(expected), sorted(repeats)[:5], report)
    assert set(published) == {r["id"] for r in expected}, report
