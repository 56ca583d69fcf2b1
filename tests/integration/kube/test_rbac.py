"""docs/rbac.md's Role is exactly what remediator needs on Kubernetes.

Every Kubernetes path of the daemon (the start-up check, each action, the config
steps, the Leases, the DSN read from a Secret, the migration Job runner) runs as a
ServiceAccount bound to exactly that Role (dry runs need the same verbs as real
writes). Then each verb of the Role is taken away in turn, and some path must be
refused with 403 without it: the Role holds nothing unused.
"""

from __future__ import annotations

import copy
import itertools
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio.client.exceptions import ApiException

from remediator.connectors.kubernetes import (
    ServiceLease,
    current_replicas,
    endpoints_ready_for,
    pre_canary_replicas,
    rollout_restart,
    rollout_status,
    rollout_undo,
    scale,
    scale_up,
    set_canary_weight_zero,
    switch_service_selector,
)
from remediator.connectors.kubernetes.client import KubeClient, Ref, connect
from remediator.connectors.kubernetes.configmaps import (
    MANAGED_BY,
    SNAPSHOT_DEPLOYMENT,
    SNAPSHOT_OF,
    SNAPSHOT_REVISION,
    snapshot_name,
)
from remediator.connectors.kubernetes.errors import KubeError
from remediator.connectors.kubernetes.jobrunner import SERVICE_LABEL, JobRunner, secret_source
from remediator.connectors.kubernetes.jobrunner import _delete as delete_job
from remediator.connectors.kubernetes.scale import KubernetesFacts
from remediator.connectors.kubernetes.steps import KubernetesStepRunner, LeaseLock
from remediator.connectors.postgres.model import MigrationStatus
from remediator.connectors.postgres.steps import ServiceDatabase
from remediator.domain.errors import PermanentError
from remediator.domain.retention import RetentionPolicy
from remediator.domain.rules import RulePack
from remediator.domain.rules.model import ServiceSpec
from remediator.domain.signals import Signal, Source, Status
from remediator.domain.steps import (
    ExportConfigParams,
    ExportConfigStep,
    RecordEvidenceParams,
    RecordEvidenceStep,
    RestoreConfigParams,
    RestoreConfigStep,
)
from remediator.rulefiles import load_rule_pack_from_path
from remediator.runtime import Runtime
from remediator.settings import load_settings
from tests.integration.kube.conftest import Kubectl, deployment
from tests.polling import eventually

pytestmark = pytest.mark.integration

REPO = Path(__file__).parents[3]
RBAC_DOC = REPO / "docs" / "rbac.md"
DSN = "postgresql://web:not-a-real-password@db.example:5432/web"


# -- the documented Role ------------------------------------------------------------------


def documented_manifests() -> list[dict[str, Any]]:
    """The first YAML block of docs/rbac.md: ServiceAccount, Role, RoleBinding."""
    block = re.search(r"^```yaml\n(.*?)^```", RBAC_DOC.read_text(), re.DOTALL | re.MULTILINE)
    assert block, "no yaml block in docs/rbac.md"
    docs = [d for d in yaml.safe_load_all(block.group(1)) if d]
    assert [d["kind"] for d in docs] == ["ServiceAccount", "Role", "RoleBinding"]
    return docs


def documented_rules() -> list[dict[str, Any]]:
    return list(documented_manifests()[1]["rules"])


def bound(namespace: str, name: str, rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The documented manifests for ServiceAccount ``name`` in ``namespace``, with ``rules``."""
    account, role, binding = copy.deepcopy(documented_manifests())
    for obj in (account, role, binding):
        obj["metadata"].update(name=name, namespace=namespace)
    role["rules"] = rules
    binding["roleRef"]["name"] = name
    binding["subjects"] = [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]
    return [account, role, binding]


def grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def without(rules: list[dict[str, Any]], index: int, verb: str) -> list[dict[str, Any]]:
    """``rules`` with one verb of one rule taken away (the rule too, if it was its last)."""
    out = copy.deepcopy(rules)
    out[index]["verbs"] = [v for v in out[index]["verbs"] if v != verb]
    return [r for r in out if r["verbs"]]


def each_verb() -> list[Any]:
    return [
        pytest.param(
            index, verb, id=f"{rule['apiGroups'][0] or 'core'}/{rule['resources'][0]}:{verb}"
        )
        for index, rule in enumerate(documented_rules())
        for verb in rule["verbs"]
    ]


# -- the namespace the paths act on, set up once as admin ---------------------------------


@dataclass(frozen=True)
class World:
    namespace: str
    kubectl: Kubectl
    kubeconfig: Path
    pack: RulePack
    workdir: Path


def _apply(kubectl: Kubectl, workdir: Path, objects: list[dict[str, Any]]) -> None:
    path = workdir / f"apply-{uuid.uuid4().hex[:8]}.yaml"
    path.write_text(yaml.safe_dump_all(objects))
    kubectl.run("apply", "-f", str(path))


def _wait(probe: Callable[[], bool], *, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:.0f}s")
        time.sleep(0.2)


def _objects(namespace: str) -> list[dict[str, Any]]:
    web = deployment(
        "web",
        "example/web:1",
        pod_spec={"volumes": [{"name": "c", "configMap": {"name": "web-config"}}]},
    )
    web["metadata"]["annotations"] = {"remediator.io/pre-canary-replicas": "3"}
    snapshot_labels = {
        MANAGED_BY: "remediator",
        SNAPSHOT_OF: "web-config",
        SNAPSHOT_REVISION: "1",
        SNAPSHOT_DEPLOYMENT: "web",
    }
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web-config"},
         "data": {"a": "2"}},
        # What revision 1 ran with (as a deploy event would have kept it); the live one
        # differs, so a restore has something to write.
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "web-config-rev-1", "labels": snapshot_labels},
         "immutable": True, "data": {"a": "1"}},
        web,
        deployment("api", "example/api:1"),
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
         "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}},
        {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
         "metadata": {"name": "web"},
         "spec": {"rules": [{"backendRefs": [{"name": "web", "port": 80, "weight": 90},
                                             {"name": "web-canary", "port": 80, "weight": 10}]}]}},
        {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
         "metadata": {"name": "api"},
         "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"},
                  "minReplicas": 1, "maxReplicas": 3}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "web-db"},
         "stringData": {"dsn": DSN}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "unrelated"},
         "stringData": {"password": "not-for-remediator"}},
    ]  # fmt: skip
    for obj in objects:
        obj["metadata"]["namespace"] = namespace
    return objects


def _pack(namespace: str) -> RulePack:
    """The shipped rules with one catalog service, "web", in the test's namespace."""
    web = ServiceSpec.model_validate(
        {
            "namespace": namespace,
            "workload": "web",
            "rollback": {"strategy": "rolling"},
            "config": {"configmaps": ["web-config"]},
            "database": {
                "engine": "postgres",
                "dsn_secret": "web-db",
                "runner": "job",
                "job": {"image": "example/web:1", "command": ["bin/migrate", "down", "{target}"]},
            },
        }
    )
    pack = load_rule_pack_from_path(REPO / "rules")
    return pack.model_copy(update={"services": {"web": web}})


@pytest.fixture(scope="module")
def world(kube: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    kubectl = Kubectl(kube)
    workdir = tmp_path_factory.mktemp("rbac")
    namespace = f"rbac-{uuid.uuid4().hex[:8]}"
    kubectl.run("create", "namespace", namespace)
    # Pods are refused until the ServiceAccount controller has created "default".
    _wait(lambda: "serviceaccount/default" in kubectl.run(
        "get", "serviceaccount", "-n", namespace, "-o", "name"), what="default ServiceAccount")  # fmt: skip
    try:
        _apply(kubectl, workdir, _objects(namespace))
        kubectl.run("set", "image", "deployment/web", "app=example/web:2", "-n", namespace)

        def two_revisions() -> bool:
            items = kubectl.json("get", "replicasets", "-n", namespace, "-l", "app=web")["items"]
            web = kubectl.json("get", "deployment", "web", "-n", namespace)
            revision = (
                web["metadata"].get("annotations", {}).get("deployment.kubernetes.io/revision")
            )
            return len(items) == 2 and revision == "2"

        _wait(two_revisions, what="two revisions of web")
        yield World(
            namespace=namespace,
            kubectl=kubectl,
            kubeconfig=Path(kube.endpoints["kubeconfig"]),
            pack=_pack(namespace),
            workdir=workdir,
        )
    finally:
        kubectl.run("delete", "namespace", namespace, "--wait=false")


# -- a ServiceAccount bound to some rules ----------------------------------------------------

_accounts = itertools.count(1)


async def granted_rules(api: k8s_client.ApiClient, namespace: str) -> set[tuple[str, str, str]]:
    """What the authorizer grants the caller in ``namespace`` now (SelfSubjectRulesReview)."""
    review = await k8s_client.AuthorizationV1Api(api).create_self_subject_rules_review(
        k8s_client.V1SelfSubjectRulesReview(
            spec=k8s_client.V1SelfSubjectRulesReviewSpec(namespace=namespace)
        )
    )
    return {
        (group, resource, verb)
        for rule in review.status.resource_rules or []
        for group in rule.api_groups or []
        for resource in rule.resources or []
        for verb in rule.verbs
    }


@dataclass(frozen=True)
class Account:
    client: KubeClient
    kubeconfig: Path
    tag: str


async def account(world: World, rules: list[dict[str, Any]]) -> Account:
    """A fresh ServiceAccount bound to ``rules``, once the authorizer applies them."""
    tag = f"r{next(_accounts)}-{uuid.uuid4().hex[:4]}"
    name = f"remediator-{tag}"
    _apply(world.kubectl, world.workdir, bound(world.namespace, name, rules))
    token = world.kubectl.run(
        "create", "token", name, "-n", world.namespace, "--duration=10m"
    ).strip()
    config = yaml.safe_load(world.kubeconfig.read_text())
    config["users"] = [{"name": "admin", "user": {"token": token}}]
    path = world.workdir / f"{name}-kubeconfig"
    path.write_text(yaml.safe_dump(config))
    client = await connect(kubeconfig=path)
    # RBAC reaches the authorizer through an informer: wait until it grants the rules.
    await eventually(
        lambda: granted_rules(client.api, world.namespace),
        lambda granted: grants(rules) <= granted,
        timeout=30,
        what=f"the rules of {name} in effect",
    )
    return Account(client=client, kubeconfig=path, tag=tag)


@pytest.fixture
async def bind(world: World) -> AsyncIterator[Callable[[list[dict[str, Any]]], Awaitable[Account]]]:
    opened: list[Account] = []

    async def make(rules: list[dict[str, Any]]) -> Account:
        made = await account(world, rules)
        opened.append(made)
        return made

    yield make
    for made in opened:
        await made.client.close()


# -- every Kubernetes path of the daemon --------------------------------------------------


class Refused(Exception):
    """A path that keeps going after a refusal (logs, a delete) was refused anyway."""


@dataclass(frozen=True)
class Ctx:
    world: World
    sa: Account

    @property
    def ns(self) -> str:
        return self.world.namespace


async def startup_check(ctx: Ctx) -> None:
    settings = load_settings(
        overrides={
            "kubernetes": {"kubeconfig": ctx.sa.kubeconfig},
            "journal": {"url": f"sqlite:///{ctx.world.workdir / 'never-opened.db'}"},
        }
    )
    runtime = Runtime(settings, pack=ctx.world.pack)
    kube = await runtime._connect_kube()  # what `remediator run` does before serving
    if kube is None:
        raise Refused(runtime.kube_status)
    await kube.close()


async def rollout_paths(ctx: Ctx) -> None:
    sa, kw = ctx.sa.client, {"namespace": ctx.ns}
    assert (await rollout_undo(sa, **kw, deployment="web", dry_run=True)).to_revision == 1
    await rollout_restart(sa, **kw, deployment="web", dry_run=True)
    await rollout_status(sa, **kw, deployment="web")


async def bluegreen_paths(ctx: Ctx) -> None:
    sa, kw = ctx.sa.client, {"namespace": ctx.ns}
    await switch_service_selector(
        sa, **kw, service="web", selector_key="app", to_value="web-blue", dry_run=True
    )
    await endpoints_ready_for(sa, **kw, service="web", selector={"app": "web"})


async def canary_paths(ctx: Ctx) -> None:
    sa, kw = ctx.sa.client, {"namespace": ctx.ns}
    await set_canary_weight_zero(
        sa, **kw, route="web", canary_backend="web-canary", stable_backend="web", dry_run=True
    )
    assert await pre_canary_replicas(sa, **kw, deployment="web") == 3


async def scale_paths(ctx: Ctx) -> None:
    sa, kw = ctx.sa.client, {"namespace": ctx.ns}
    await scale(sa, **kw, deployment="web", replicas=5, dry_run=True)
    up = await scale_up(sa, **kw, deployment="web", target_replicas=4, max_replicas=5, dry_run=True)
    assert up.via == "deployment"
    up = await scale_up(sa, **kw, deployment="api", target_replicas=4, max_replicas=5, dry_run=True)
    assert up.via == "hpa"
    assert await current_replicas(sa, **kw, deployment="api") == (2, 3)
    facts = KubernetesFacts(sa, deployments={"api": "api"})
    assert await facts.replicas(service="api", namespace=ctx.ns) == (2, 3)


_revisions = itertools.count(100)


async def config_paths(ctx: Ctx) -> None:
    runner = KubernetesStepRunner(kube=ctx.sa.client, pack=ctx.world.pack)
    # A deploy event keeps its revision's config (for real: a new revision each time).
    now = datetime.now(UTC)
    event = Signal(
        key=f"deploy-{uuid.uuid4().hex}", source=Source.KAFKA, kind="deployment.succeeded",
        status=Status.EVENT, service="web", namespace=ctx.ns,
        labels={"revision": str(next(_revisions))}, annotations={}, starts_at=now, ends_at=None,
        received_at=now,
    )  # fmt: skip
    await runner.snapshot_for_deploy(event)
    exported = await runner.run(
        ExportConfigStep(
            params=ExportConfigParams(namespace=ctx.ns, configmap="web-config"), reason="rbac"
        ),
        service="web", dry_run=True, context={},
    )  # fmt: skip
    assert exported["created"] == [snapshot_name("web-config", 2, {"data": {"a": "2"}})]
    restored = await runner.run(
        RestoreConfigStep(
            params=RestoreConfigParams(namespace=ctx.ns, configmap="web-config", to="previous"),
            reason="rbac",
        ),
        service="web", dry_run=True, context={},
    )  # fmt: skip
    assert restored["restored"] == ["web-config"] and restored["revision"] == 1


async def evidence_paths(ctx: Ctx) -> None:
    """The record's evidence: the workload's events. A refusal is written down, not
    raised (evidence never fails a plan): here it fails the path."""
    runner = KubernetesStepRunner(kube=ctx.sa.client, pack=ctx.world.pack)
    detail = await runner.run(
        RecordEvidenceStep(
            params=RecordEvidenceParams(namespace=ctx.ns, service="web", deployment="web",
                                        since=datetime.now(UTC) - timedelta(hours=1)),
            reason="rbac",
        ),
        service="web", dry_run=False, context={},
    )  # fmt: skip
    if isinstance(detail["events"], str):
        raise Refused(detail["events"])
    assert any(event["name"].startswith("web") for event in detail["events"])


async def snapshot_retention(ctx: Ctx) -> None:
    """The daemon's retention task on config snapshots: an old revision's goes."""
    runner = KubernetesStepRunner(kube=ctx.sa.client, pack=ctx.world.pack)
    name = f"web-config-rev-0-{uuid.uuid4().hex[:10]}"
    labels = {MANAGED_BY: "remediator", SNAPSHOT_OF: "web-config", SNAPSHOT_REVISION: "0",
              SNAPSHOT_DEPLOYMENT: "web"}  # fmt: skip
    await ctx.sa.client.create(
        Ref("ConfigMap", ctx.ns, name),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels},
         "immutable": True, "data": {"a": "0"}},
        dry_run=False,
    )  # fmt: skip
    result = await runner.prune_config_snapshots(
        "web", policy=RetentionPolicy(keep_newest=1, keep_days=0),
        now=datetime.now(UTC) + timedelta(days=1), dry_run=False,
    )  # fmt: skip
    assert name in result.deleted


async def lease_paths(ctx: Ctx) -> None:
    sa = ctx.sa.client
    lease = ServiceLease(
        sa, namespace=ctx.ns, service=f"web-{ctx.sa.tag}", holder="i-1", duration_seconds=15
    )
    await lease.acquire()  # creates it
    await lease.renew()
    await lease.release()
    lock = LeaseLock(kube=sa, holder="i-2", duration_seconds=15)  # the executor's
    assert await lock.acquire(service=f"api-{ctx.sa.tag}", namespace=ctx.ns)
    await lock.release(service=f"api-{ctx.sa.tag}", namespace=ctx.ns)


async def dsn_from_secret(ctx: Ctx) -> None:
    database = ServiceDatabase.from_pack(
        ctx.world.pack, "web", backup_root=ctx.world.workdir,
        secret_source=secret_source(ctx.sa.client.api),
    )  # fmt: skip
    assert (await database.dsn()).get_secret_value() == DSN


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


async def migration_job(ctx: Ctx) -> None:
    """The Job runner: create, watch, find the pod, read its log; and the delete it makes
    when a Job never reports (called directly: reaching it for real takes the Job's
    deadline plus half a minute)."""
    service = f"web-{ctx.sa.tag}"

    async def status() -> MigrationStatus:
        return MigrationStatus(kind="job", applied=("001_init", "002_orders"))

    runner = JobRunner(
        api=ctx.sa.client.api, namespace=ctx.ns, service=service, image="example/web:1",
        command=["bin/migrate", "down", "{target}"], status=status, poll_s=0.2, timeout_s=120,
        env=[{"name": "DATABASE_URL",
              "valueFrom": {"secretKeyRef": {"name": "web-db", "key": "dsn"}}}],
    )  # fmt: skip
    result = await runner.revert_last()
    if "HTTP 403" in result.output:  # logs are evidence: their refusal does not fail a revert
        raise Refused(result.output)
    assert f"{service}-revert-" in result.output  # its pod was found

    admin = await connect(kubeconfig=ctx.world.kubeconfig)
    async with admin:
        batch = k8s_client.BatchV1Api(admin.api)
        [job] = (
            await batch.list_namespaced_job(ctx.ns, label_selector=f"{SERVICE_LABEL}={service}")
        ).items
        warnings = _Warnings()
        jobrunner_log = logging.getLogger("remediator.connectors.kubernetes.jobrunner")
        jobrunner_log.addHandler(warnings)
        try:
            path = f"/apis/batch/v1/namespaces/{ctx.ns}/jobs/{job.metadata.name}"
            await delete_job(runner._api, path, what=f"Job {ctx.ns}/{job.metadata.name}")
        finally:
            jobrunner_log.removeHandler(warnings)
        if warnings.messages:
            raise Refused("; ".join(warnings.messages))
        with pytest.raises(ApiException) as gone:
            await batch.read_namespaced_job(job.metadata.name, ctx.ns)
        assert gone.value.status == 404


# Cheap paths first; the Job runner, the slowest, last.
PATHS: list[tuple[str, Callable[[Ctx], Awaitable[None]]]] = [
    ("start-up check", startup_check),
    ("rollout undo/restart/status", rollout_paths),
    ("blue-green switch and verification", bluegreen_paths),
    ("canary abort", canary_paths),
    ("scale, scale up, replica facts", scale_paths),
    ("config snapshot, export and restore", config_paths),
    ("config snapshot retention", snapshot_retention),
    ("record evidence", evidence_paths),
    ("Leases", lease_paths),
    ("DSN from a Secret", dsn_from_secret),
    ("migration Job", migration_job),
]


def forbidden(exc: BaseException) -> bool:
    if isinstance(exc, KubeError):
        return exc.status == 403
    return isinstance(exc, PermanentError | Refused) and "403" in str(exc)


async def run_paths(ctx: Ctx, *, until_refused: bool = False) -> dict[str, BaseException]:
    failures: dict[str, BaseException] = {}
    for name, path in PATHS:
        try:
            await path(ctx)
        except Exception as exc:  # noqa: BLE001 - collected and judged by the test
            failures[name] = exc
            if until_refused:
                break
    return failures


# -- the tests ----------------------------------------------------------------------------


async def test_the_documented_role_runs_every_path(
    world: World, bind: Callable[[list[dict[str, Any]]], Awaitable[Account]]
) -> None:
    sa = await bind(documented_rules())
    failures = await run_paths(Ctx(world, sa))
    assert not failures, {name: f"{type(e).__name__}: {e}" for name, e in failures.items()}

    # And nothing beyond it: a delete is forbidden, reported with the object's name.
    web = Ref("Deployment", world.namespace, "web")
    fresh = await sa.client.get(web)
    with pytest.raises(KubeError) as refused:
        await sa.client.delete(web, resource_version=fresh["metadata"]["resourceVersion"],
                               dry_run=True)  # fmt: skip
    assert refused.value.status == 403
    assert f"Deployment {world.namespace}/web" in str(refused.value)
    # Secrets are read by name, never listed.
    granted = await granted_rules(sa.client.api, world.namespace)
    assert ("", "secrets", "list") not in granted and ("", "secrets", "get") in granted


@pytest.mark.parametrize(("index", "verb"), each_verb())
async def test_each_verb_of_the_role_is_needed(
    index: int,
    verb: str,
    world: World,
    bind: Callable[[list[dict[str, Any]]], Awaitable[Account]],
) -> None:
    rule = documented_rules()[index]
    taken = {(g, r, verb) for g in rule["apiGroups"] for r in rule["resources"]}
    sa = await bind(without(documented_rules(), index, verb))
    assert not taken & await granted_rules(sa.client.api, world.namespace)  # nothing else grants it

    failures = await run_paths(Ctx(world, sa), until_refused=True)

    assert failures, f"every path ran without {rule['resources']}:{verb}: it is not needed"
    [(name, exc)] = failures.items()

    assert forbidden(exc), f"{name} failed for another reason: {type(exc).__name__}: {exc}"


async def test_secrets_can_be_restricted_to_the_dsn_secrets_by_name(
    world: World, bind: Callable[[list[dict[str, Any]]], Awaitable[Account]]
) -> None:
    """docs/rbac.md's advice: `get` on the catalog's dsn_secret names only."""
    rules = [r for r in documented_rules() if r["resources"] != ["secrets"]]
    rules.append(
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["web-db"], "verbs": ["get"]}
    )
    sa = await bind(rules)
    await dsn_from_secret(Ctx(world, sa))
    with pytest.raises(PermanentError, match="HTTP 403"):
        await secret_source(sa.client.api, key="password")(f"{world.namespace}/unrelated")
