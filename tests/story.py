"""The whole story, with every peer real: a release goes bad, Prometheus sees it, Alertmanager
tells remediator, remediator rolls the Deployment back on the kwok cluster, and
verification sees the condition clear.

Used by the end-to-end test (tests/e2e/test_story.py) and by ``make demo``
(``python -m tests.demo``), which narrates each hop with its time. The pieces:

- a test application (tests/storyapp.py, its own process) serving
  ``http_requests_total{code}`` with an error rate the story controls;
- real Prometheus scraping it every second with the shipped alerting rules
  (rules/prometheus/remediator-alerts.yml), their windows scaled down (``[5m]`` →
  ``[20s]``, ``for: 10m`` → ``for: 5s``) so the story takes a minute, not a quarter hour;
- real Alertmanager routing to the daemon's webhook with the ingest token;
- the daemon (a real ``remediator run`` process) with the shipped rule pack and a
  one-service catalog, deploy history from real Kafka, acting on the kwok cluster.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
import yaml

from tests.e2e.daemon import RULES, Daemon
from tests.env.base import free_port

REPO = Path(__file__).resolve().parents[1]
SHIPPED_ALERTS = REPO / "rules" / "prometheus" / "remediator-alerts.yml"
SERVICE = "storefront"
OWNER = "team-storefront"
IMAGE = "registry.example/app"  # what tests.e2e.test_approvals.released_twice rolls out
ERROR_RATE = 0.3  # of requests failing once the bad release is out
WINDOW = "20s"
PENDING = "5s"


def scaled_alerting_rules(path: Path = SHIPPED_ALERTS) -> list[dict[str, Any]]:
    """The shipped rule groups with their time windows scaled down (same expressions)."""
    groups: list[dict[str, Any]] = yaml.safe_load(path.read_text())["groups"]
    for group in groups:
        for rule in group["rules"]:
            rule["expr"] = re.sub(r"\[\d+[smh]\]", f"[{WINDOW}]", rule["expr"])
            if "for" in rule:
                rule["for"] = PENDING
    return groups


@dataclass
class Narrator:
    """Each hop with the seconds since the story began."""

    say: Callable[[str], None] = print
    began: float = field(default_factory=time.monotonic)
    hops: list[tuple[float, str]] = field(default_factory=list)

    def __call__(self, line: str) -> None:
        at = time.monotonic() - self.began
        self.hops.append((at, line))
        self.say(f"[{time.strftime('%H:%M:%S')} +{at:5.1f}s] {line}")


class StoryApp:
    """The test application's process."""

    def __init__(self, *, service: str, namespace: str, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        log = (workdir / "storyapp.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.storyapp", "--port", str(self.port),
             "--service", service, "--namespace", namespace],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO,
        )  # fmt: skip
        log.close()
        wait(lambda: _get(f"{self.url}/metrics") == 200, timeout=20, what="the test app")

    def set_error_rate(self, value: float) -> None:
        url = f"{self.url}/error-rate?value={value}"
        request = urllib.request.Request(url, method="POST")  # noqa: S310 - loopback
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback
            assert response.status == 200

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
            return int(response.status)
    except OSError:
        return 0


def wait(predicate: Callable[[], Any], *, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


@dataclass
class Outcome:
    remediation: dict[str, Any]
    signal: dict[str, Any]
    hops: list[tuple[float, str]]
    image: str


class Story:
    """Set up with ``with Story(...) as story:``, then ``story.run()``."""

    def __init__(
        self,
        workdir: Path,
        *,
        kube: Any,
        kafka: Any,
        prometheus: Any,
        alertmanager: Any,
        narrate: Narrator | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.kube, self.kafka = kube, kafka
        self.prometheus, self.alertmanager = prometheus, alertmanager
        self.narrate = narrate or Narrator()
        self.extra_env = extra_env or {}
        tag = uuid.uuid4().hex[:6]
        self.namespace = f"story-{tag}"
        self.topic = f"deployments-story-{tag}"
        self.daemon: Daemon | None = None
        self.app: StoryApp | None = None

    def __enter__(self) -> Story:
        from tests.e2e.test_approvals import released_twice

        self.workdir.mkdir(parents=True, exist_ok=True)
        say = self.narrate
        asyncio.run(released_twice(self.kube, [self.namespace]))
        say(f"kwok: Deployment {self.namespace}/app rolled out v1, then v2 (revision 2)")
        asyncio.run(self._deploy_events())
        say(f"kafka: the CD pipeline's deploy events for v1 and v2 on {self.topic}")
        self.app = StoryApp(service=SERVICE, namespace=self.namespace, workdir=self.workdir)
        self.daemon = self._daemon()
        self.daemon.start()
        wait(lambda: sum(s["source"] == "kafka" for s in self.daemon.signals()) == 2,  # type: ignore[union-attr]
             timeout=60, what="the deploy events journaled")  # fmt: skip
        say(f"remediator: running at {self.daemon.url}, deploy history journaled")
        self.alertmanager.configure(
            webhook_url=self.daemon.webhook_url, bearer_token=self.daemon.token,
            group_by=["alertname", "service"],
        )  # fmt: skip
        self.prometheus.configure(
            rules=scaled_alerting_rules(),
            scrape_targets={"storefront": [f"127.0.0.1:{self.app.port}"]},
        )
        say("prometheus: scraping the app every second with the shipped alerting rules")
        return self

    async def _deploy_events(self) -> None:
        """What the CD pipeline reported: v1 two hours ago, v2 ten minutes ago."""
        from aiokafka import AIOKafkaProducer

        now = datetime.now(UTC)
        producer = AIOKafkaProducer(bootstrap_servers=self.kafka.endpoints["kafka_bootstrap"])
        await producer.start()
        try:
            for revision, at in ((1, now - timedelta(hours=2)), (2, now - timedelta(minutes=10))):
                event = {
                    "specversion": "1.0", "id": f"deploy-{self.namespace}-{revision}",
                    "source": "ci/deployer", "type": "io.remediator.deployment.succeeded",
                    "time": at.isoformat(),
                    "data": {"service": SERVICE, "namespace": self.namespace,
                             "version": f"v{revision}", "revision": str(revision),
                             "previous_revision": str(revision - 1),
                             "image": f"{IMAGE}:v{revision}"},
                }  # fmt: skip
                await producer.send_and_wait(self.topic, orjson.dumps(event), key=SERVICE.encode())
        finally:
            await producer.stop()

    def _daemon(self) -> Daemon:
        rules = self.workdir / "rules"
        rules.mkdir(parents=True, exist_ok=True)
        for name in ("defaults.yaml", "remediation.yaml"):
            shutil.copy(RULES / name, rules / name)
        assert self.app is not None
        catalog = {"services": {SERVICE: {
            "namespace": self.namespace, "workload": "app", "rollback": {"strategy": "rolling"},
            "owner": OWNER, "health_url": f"{self.app.url}/healthz",
        }}}  # fmt: skip
        (rules / "catalog.yaml").write_text(orjson.dumps(catalog).decode())
        return Daemon(
            self.workdir / "daemon",
            rules=rules,
            extra_env={
                "REMEDIATOR_KUBERNETES__KUBECONFIG": self.kube.endpoints["kubeconfig"],
                "REMEDIATOR_KUBERNETES__INSTANCE_ID": f"story-{self.namespace}",
                "REMEDIATOR_KUBERNETES__ROLLOUT_TIMEOUT_SECONDS": "90",
                "REMEDIATOR_KAFKA__BOOTSTRAP_SERVERS": self.kafka.endpoints["kafka_bootstrap"],
                "REMEDIATOR_KAFKA__DEPLOY_TOPICS": self.topic,
                "REMEDIATOR_KAFKA__GROUP_ID": f"g-{self.topic}",
                # Verification asks the same Prometheus whether the condition cleared.
                "REMEDIATOR_PROMETHEUS__URL": self.prometheus.url,
                "REMEDIATOR_PROMETHEUS__POLL_SECONDS": "1",
                **self.extra_env,
            },
        )

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self.daemon is not None and self.daemon.proc is not None:
            self.daemon.stop()
        if self.app is not None:
            self.app.stop()
        self.prometheus.configure(rules=[], scrape_targets={})
        # Prometheus may still be sending the story's alerts (resolved ones, for a while):
        # a fresh Alertmanager keeps them from the next test's webhook.
        self.alertmanager.reset()

    def run(self) -> Outcome:
        from tests.e2e.test_approvals import deployment

        assert self.daemon is not None and self.app is not None
        daemon, say = self.daemon, self.narrate
        self.app.set_error_rate(ERROR_RATE)
        say(f"app: v2 misbehaves: {ERROR_RATE:.0%} of requests fail with 500")
        wait(lambda: any(a["labels"].get("alertname") == "HighErrorRate"
                         and a["state"] == "firing" for a in self.prometheus.alerts()),
             timeout=90, what="HighErrorRate to fire")  # fmt: skip
        say("prometheus: HighErrorRate firing (5xx share over 5% for the pending time)")
        signal = wait(
            lambda: next((s for s in daemon.signals() if s["source"] == "alertmanager"
                          and s["kind"] == "HighErrorRate"), None),
            timeout=60, what="Alertmanager's delivery",
        )  # fmt: skip
        say(f"alertmanager: delivered to remediator's webhook, journaled as {signal['id']}")
        item = wait(lambda: next((r for r in daemon.remediations()
                                  if r["signal_id"] == signal["id"]), None),
                    timeout=60, what="the decision")  # fmt: skip
        item = daemon.get(f"/api/v1/remediations/{item['id']}")[1]
        steps = " → ".join(s["kind"] for s in item["decision"]["steps"])
        say(f"remediator: rule {item['rule']} plans {steps} ({item['id']})")
        image = wait(lambda: _image_if_v1(asyncio.run(deployment(self.kube, self.namespace))),
                     timeout=120, what="the rollback to land")  # fmt: skip
        say(f"kwok: Deployment {self.namespace}/app is back on {image}")
        self.app.set_error_rate(0.0)
        say("app: v1 serves again: no more 500s")
        done = wait(lambda: _finished(daemon, item["id"]), timeout=150,
                    what="the remediation to finish")  # fmt: skip
        for step in done["steps"]:
            if step["kind"].startswith(("verify", "wait", "record")):
                say(f"remediator: {step['kind']} {step['status']}: {_detail(step)}")
        say(f"remediator: remediation {done['id']} {done['status']}")
        return Outcome(remediation=done, signal=signal, hops=self.narrate.hops, image=image)


def _detail(step: dict[str, Any]) -> str:
    detail = step.get("detail")
    if isinstance(detail, dict):
        detail = detail.get("summary") or orjson.dumps(detail).decode()
    text = " ".join(str(detail or "").split())
    return text if len(text) <= 160 else text[:157] + "..."


def _image_if_v1(deployment: Any) -> str | None:
    image = str(deployment.spec.template.spec.containers[0].image)
    return image if image.endswith(":v1") else None


def _finished(daemon: Daemon, rid: str) -> dict[str, Any] | None:
    status, item = daemon.get(f"/api/v1/remediations/{rid}")
    if status == 200 and item["status"] in ("succeeded", "failed", "needs_human"):
        return dict(item)
    return None
