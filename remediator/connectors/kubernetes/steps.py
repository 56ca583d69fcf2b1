"""Plan steps carried out on Kubernetes (and helm): the executor's StepRunner.

Each step maps to one connector action with the semantics an operator knows
(kubectl rollout undo, a Service selector switch, HTTPRoute weights, scale, helm
rollback, ConfigMap restore + rollout restart). In dry-run every mutation goes to
the API server with dryRun=All, and waits are skipped: nothing changed to wait for.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from remediator.connectors.helm import Helm, HelmReleasePending
from remediator.connectors.kubernetes.bluegreen import (
    switch_service_selector,
    wait_endpoints_ready_for,
)
from remediator.connectors.kubernetes.canary import (
    pre_canary_replicas,
    record_pre_canary_replicas,
    set_canary_weight_zero,
)
from remediator.connectors.kubernetes.client import KubeClient, Ref
from remediator.connectors.kubernetes.configmaps import (
    SNAPSHOT_DEPLOYMENT,
    SNAPSHOT_REVISION,
    SnapshotOrigin,
    SnapshotRetention,
    prune_config_snapshots,
    restore_configmaps,
    snapshot_configmaps,
)
from remediator.connectors.kubernetes.errors import ActionRefused, LeaseHeld
from remediator.connectors.kubernetes.lease import ServiceLease
from remediator.connectors.kubernetes.rollout import rollout_restart, rollout_undo
from remediator.connectors.kubernetes.scale import scale, scale_up
from remediator.connectors.kubernetes.smoke import run_smoke_test
from remediator.connectors.kubernetes.status import rollout_status, wait_for_rollout
from remediator.connectors.kubernetes.verify import http_health
from remediator.connectors.prometheus import Prometheus
from remediator.domain.errors import PermanentError, TemporaryError
from remediator.domain.plans import Step, StepKind
from remediator.domain.retention import RetentionPolicy
from remediator.domain.rules import RulePack
from remediator.domain.rules.model import CanaryRollback
from remediator.domain.signals import Signal
from remediator.domain.steps import (
    ExportConfigStep,
    HelmRollbackParams,
    HelmRollbackStep,
    NotifyStep,
    RecordEvidenceParams,
    RecordEvidenceStep,
    RestartWorkloadStep,
    RestoreConfigStep,
    RolloutUndoStep,
    ScaleDeploymentParams,
    ScaleDeploymentStep,
    SetRouteWeightsStep,
    SwitchSelectorParams,
    SwitchSelectorStep,
    VerifyConditionParams,
    VerifyConditionStep,
    VerifyHealthStep,
    VerifySmokeStep,
    WaitRolloutStep,
)
from remediator.ports import NeedsHuman

log = logging.getLogger(__name__)

REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
# Setting a value, waiting or checking again is harmless; undo, helm rollback and
# restores are not (run twice they go somewhere else), so a crash mid-way needs people.
RESUMABLE = frozenset(
    {
        StepKind.WAIT_ROLLOUT,
        StepKind.VERIFY_HEALTH,
        StepKind.VERIFY_CONDITION,
        StepKind.VERIFY_SMOKE,  # a smoke test only reads; a second run is harmless
        StepKind.RECORD_EVIDENCE,
        StepKind.NOTIFY,
        StepKind.SCALE_DEPLOYMENT,
        StepKind.SWITCH_SELECTOR,
        StepKind.SET_ROUTE_WEIGHTS,
        StepKind.EXPORT_CONFIG,
    }
)


_LOG_TAIL_CHARS = 2000  # of a smoke test's log, kept as evidence
_MAX_EVENTS = 50  # the newest Kubernetes events of the workload, for the record
_EVENT_MESSAGE_CHARS = 300
# Between health checks while a changed service's health URL still fails.
HEALTH_POLL_SECONDS = 2.0
_MAX_HELM_REVISIONS = 10


def _event_time(event: Mapping[str, Any]) -> datetime | None:
    meta = event.get("metadata") or {}
    for value in (event.get("lastTimestamp"), event.get("eventTime"),
                  meta.get("creationTimestamp")):  # fmt: skip
        if isinstance(value, str) and value:
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
    return None


def _workload_event(
    item: Mapping[str, Any], deployment: str, *, since: datetime
) -> dict[str, Any] | None:
    """The record's form of an event about ``deployment``, its ReplicaSets or its Pods,
    at or after ``since``; ``None`` for any other event."""
    involved = item.get("involvedObject") or {}
    name = str(involved.get("name") or "")
    if name != deployment and not name.startswith(f"{deployment}-"):
        return None
    at = _event_time(item)
    if at is None or at < since:
        return None
    return {
        "at": at.isoformat(),
        "kind": str(involved.get("kind") or ""),
        "name": name,
        "type": str(item.get("type") or ""),
        "reason": str(item.get("reason") or ""),
        "message": str(item.get("message") or "")[:_EVENT_MESSAGE_CHARS],
        "count": int(item.get("count") or 1),
    }


def _by_time(kept: list[tuple[str, int, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [event for _, _, event in sorted(kept)]


class VerificationFailed(NeedsHuman):
    """A check after a change did not pass: the change is not done, people decide."""


def _skipped(check: str, summary: str, **evidence: Any) -> dict[str, Any]:
    return {"summary": summary, "check": check, "result": "skipped", **evidence}


def _record(result: Any) -> dict[str, Any]:
    is_instance = dataclasses.is_dataclass(result) and not isinstance(result, type)
    data = dataclasses.asdict(result) if is_instance else dict(result)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in data.items()}


class KubernetesStepRunner:
    def __init__(
        self,
        *,
        kube: KubeClient,
        pack: RulePack,
        helm: Helm | None = None,
        prometheus: Prometheus | None = None,
        rollout_timeout_seconds: float = 300.0,
        health_timeout_seconds: float = 10.0,
        health_grace_seconds: float = 60.0,
        poll_seconds: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        event_page_size: int = 500,
        events_read_at_most: int = 20_000,
    ) -> None:
        """``health_grace_seconds``: how long after a change its health URL may keep
        failing before the check fails (traffic moves to the restored pods meanwhile).
        ``events_read_at_most``: the record reads a namespace's events up to this many
        (they live an hour, the apiserver's ``--event-ttl``), ``event_page_size`` a
        request."""
        self._kube = kube
        self._event_page_size = event_page_size
        self._events_read_at_most = events_read_at_most
        self._health_grace = health_grace_seconds
        self._monotonic = monotonic
        self._sleep = sleep
        self._pack = pack
        self._helm = helm
        self._prometheus = prometheus
        self._rollout_timeout = rollout_timeout_seconds
        self._health_timeout = health_timeout_seconds
        self._poll = poll_seconds

    def resumable(self, kind: StepKind) -> bool:
        return kind in RESUMABLE

    async def run(
        self, step: Step, *, service: str, dry_run: bool, context: dict[str, Any]
    ) -> dict[str, Any]:
        namespace = step.params.namespace
        self._in_scope(service, namespace)
        match step:
            case RolloutUndoStep(params=undo):
                return _record(
                    await rollout_undo(
                        self._kube,
                        namespace=namespace,
                        deployment=undo.deployment,
                        to_revision=undo.to_revision,
                        # The engine only ever targets a revision recorded healthy.
                        allowed_revisions={undo.to_revision},
                        dry_run=dry_run,
                    )
                )
            case WaitRolloutStep(params=wait):
                return await self._wait_rollout(namespace, wait.deployment, dry_run=dry_run)
            case SwitchSelectorStep(params=switch):
                return await self._switch(switch, dry_run=dry_run)
            case SetRouteWeightsStep(params=weights):
                canary = self._canary_spec(service)
                return _record(
                    await set_canary_weight_zero(
                        self._kube,
                        namespace=namespace,
                        route=weights.route,
                        canary_backend=canary.canary_deployment,
                        stable_backend=canary.stable_deployment,
                        dry_run=dry_run,
                    )
                )
            case ScaleDeploymentStep(params=sizes):
                return await self._scale(sizes, dry_run=dry_run)
            case HelmRollbackStep(params=helm):
                return await self._helm_rollback(helm, dry_run=dry_run)
            case ExportConfigStep():
                return await self._export_config(namespace, service, dry_run=dry_run)
            case RestoreConfigStep():
                return await self._restore_config(namespace, service, dry_run=dry_run,
                                                  context=context)  # fmt: skip
            case RestartWorkloadStep(params=restart):
                if context.get("config_restored"):
                    return {"summary": "restarted by the config restore"}
                return _record(
                    await rollout_restart(
                        self._kube, namespace=namespace, deployment=restart.deployment,
                        dry_run=dry_run,
                    )
                )  # fmt: skip
            case VerifyHealthStep(params=health):
                return await self._verify_health(health.url, dry_run=dry_run)
            case VerifyConditionStep(params=condition):
                return await self._verify_condition(condition, dry_run=dry_run)
            case VerifySmokeStep():
                return await self._verify_smoke(namespace, service, dry_run=dry_run)
            case RecordEvidenceStep(params=evidence):
                return await self._record_evidence(evidence)
            case NotifyStep():
                return {"summary": "notices go out through the outbox"}
        # Database steps go to the PostgreSQL step runner (runtime.RoutedStepRunner).
        raise PermanentError(f"no Kubernetes implementation for step {step.kind.value}")

    # -- steps -----------------------------------------------------------------------
    async def _wait_rollout(
        self, namespace: str, deployment: str, *, dry_run: bool
    ) -> dict[str, Any]:
        if dry_run:
            status = await rollout_status(self._kube, namespace=namespace, deployment=deployment)
            return {"summary": f"skipped in dry run; now: {status.message}"}
        status = await wait_for_rollout(
            self._kube,
            namespace=namespace,
            deployment=deployment,
            timeout_seconds=self._rollout_timeout,
            poll_seconds=self._poll,
        )
        if not status.complete:
            # The change was made; whether the service runs is unknown: people look.
            raise VerificationFailed(
                f"rollout of {namespace}/{deployment} did not complete within "
                f"{self._rollout_timeout:.0f}s: {status.message}",
                detail={"check": "rollout", "result": "failed", "deployment": deployment},
            )
        return {"summary": status.message, "check": "rollout", "result": "passed",
                "deployment": deployment}  # fmt: skip

    async def _export_config(
        self, namespace: str, service: str, *, dry_run: bool
    ) -> dict[str, Any]:
        deployment = self._workload(service)
        revision = await self._revision(namespace, deployment)
        return _record(
            await snapshot_configmaps(
                self._kube, namespace=namespace, deployment=deployment, revision=revision,
                dry_run=dry_run, origin=SnapshotOrigin.EXPORT,
            )
        )  # fmt: skip

    async def _restore_config(
        self, namespace: str, service: str, *, dry_run: bool, context: dict[str, Any]
    ) -> dict[str, Any]:
        if context.get("config_restored"):
            return {"summary": "restored with the other ConfigMaps of this plan"}
        deployment = self._workload(service)
        revision = await self._previous_snapshot(namespace, deployment)
        result = await restore_configmaps(
            self._kube, namespace=namespace, deployment=deployment, revision=revision,
            dry_run=dry_run,
        )  # fmt: skip
        context["config_restored"] = True
        return _record(result)

    async def _verify_health(self, url: str, *, dry_run: bool) -> dict[str, Any]:
        if dry_run:
            return _skipped("health", "skipped in dry run: nothing changed")
        deadline = self._monotonic() + self._health_grace
        attempts = 0
        while True:
            attempts += 1
            verdict = await http_health(url, timeout_seconds=self._health_timeout)
            if verdict.ok:
                return {"summary": verdict.detail, "check": "health", "result": "passed",
                        "url": url, "attempts": attempts}  # fmt: skip
            if self._monotonic() >= deadline:
                raise VerificationFailed(
                    f"health check failed: {verdict.detail} (still failing after "
                    f"{attempts} attempts in {self._health_grace:g}s)",
                    detail={"check": "health", "result": "failed", "url": url,
                            "attempts": attempts},
                )  # fmt: skip
            await self._sleep(min(HEALTH_POLL_SECONDS, max(deadline - self._monotonic(), 0)))

    async def _verify_condition(self, p: VerifyConditionParams, *, dry_run: bool) -> dict[str, Any]:
        evidence: dict[str, Any] = {"origin": p.origin, "query": p.query,
                                    "window_seconds": p.window_seconds}  # fmt: skip
        if dry_run:
            return _skipped("condition", "skipped in dry run: nothing changed", **evidence)
        if p.query is None:
            return _skipped("condition", f"not checked: {p.note}", **evidence)
        if self._prometheus is None:
            return _skipped(
                "condition", "not checked: no Prometheus is configured (prometheus.url)",
                **evidence,
            )  # fmt: skip
        evidence["prometheus"] = self._prometheus.base_url
        try:
            verdict = await self._prometheus.wait_until_empty(
                p.query, window_seconds=p.window_seconds, match_labels=p.match_labels
            )
        except (TemporaryError, PermanentError) as exc:
            # Not knowing is not passing: people decide whether the service recovered.
            raise VerificationFailed(
                f"could not tell whether the condition cleared: {exc}",
                detail={"check": "condition", "result": "failed", **evidence},
            ) from exc
        evidence["polls"] = verdict.polls
        if not verdict.ok:
            raise VerificationFailed(
                f"the triggering condition has not cleared: {verdict.detail}",
                detail={"check": "condition", "result": "failed", **evidence,
                        "series": [dict(s) for s in verdict.series]},
            )  # fmt: skip
        return {"summary": verdict.detail, "check": "condition", "result": "passed", **evidence}

    async def _verify_smoke(self, namespace: str, service: str, *, dry_run: bool) -> dict[str, Any]:
        spec = self._pack.services.get(service)
        template = spec.smoke_test if spec is not None else None
        if template is None:
            return _skipped("smoke", f"not run: service {service!r} has no smoke_test")
        if dry_run:
            return _skipped("smoke", "skipped in dry run: nothing changed", image=template.image)
        try:
            finished = await run_smoke_test(self._kube.api, namespace=namespace,
                                            service=service, spec=template,
                                            poll_s=self._poll)  # fmt: skip
        except (TemporaryError, PermanentError) as exc:
            raise VerificationFailed(
                f"the smoke test could not run: {exc}",
                detail={"check": "smoke", "result": "failed", "image": template.image},
            ) from exc
        evidence = {"job": finished.name, "outcome": finished.outcome, "image": template.image,
                    "log_tail": finished.logs[-_LOG_TAIL_CHARS:]}  # fmt: skip
        if finished.outcome != "Complete":
            raise VerificationFailed(
                f"the smoke test Job {namespace}/{finished.name} "
                f"{finished.outcome.lower()}: {finished.reason}",
                detail={"check": "smoke", "result": "failed", **evidence},
            )
        return {"summary": f"smoke test Job {namespace}/{finished.name} completed",
                "check": "smoke", "result": "passed", **evidence}  # fmt: skip

    async def _record_evidence(self, p: RecordEvidenceParams) -> dict[str, Any]:
        """Evidence for the record; each part that cannot be read says why, never fails."""
        now = datetime.now(UTC)
        events, cut = await self._workload_events(p.namespace, p.deployment, since=p.since)
        detail: dict[str, Any] = {"summary": "evidence recorded", "since": p.since.isoformat(),
                                  "until": now.isoformat(), "events": events}  # fmt: skip
        if cut is not None:
            detail["events_note"] = cut
        if isinstance(events, list):
            pods = sorted({e["name"] for e in events if e["kind"] == "Pod"})
            detail["pods_affected"] = pods
        if p.helm_release is not None:
            detail["helm_history"] = await self._helm_history(p.helm_release, p.namespace)
        detail["failed_requests"] = await self._failed_requests(p, seconds=(now - p.since))
        return detail

    async def _workload_events(
        self, namespace: str, deployment: str, *, since: datetime
    ) -> tuple[list[dict[str, Any]] | str, str | None]:
        """The workload's newest events since ``since``, and a note when not every event of
        the namespace was read.

        Events cannot be selected by name prefix (the workload's ReplicaSets and Pods), so
        the namespace's events are read a page at a time, keeping only the newest matches:
        memory stays one page, and a namespace with very many events costs at most
        ``events_read_at_most`` events' parsing on the event loop."""
        newest: list[tuple[str, int, dict[str, Any]]] = []  # a heap: the oldest kept first
        # Event times are whole seconds (lastTimestamp): an event in the incident's first
        # second reads as earlier than its start, so compare at that precision.
        since = since.replace(microsecond=0)
        read = 0
        try:
            async with contextlib.aclosing(
                self._kube.pages(Ref("Event", namespace), page_size=self._event_page_size)
            ) as pages:
                async for page in pages:
                    if read >= self._events_read_at_most:  # and the namespace has more
                        return _by_time(newest), (
                            f"only the first {read:,} events of namespace {namespace} were "
                            "read; the workload's may be among the others"
                        )
                    for item in page:
                        kept = _workload_event(item, deployment, since=since)
                        if kept is not None:
                            entry = (str(kept["at"]), read, kept)
                            if len(newest) < _MAX_EVENTS:
                                heapq.heappush(newest, entry)
                            else:
                                heapq.heappushpop(newest, entry)
                        read += 1
        except (TemporaryError, PermanentError) as exc:
            return f"unavailable: {exc}", None
        return _by_time(newest), None

    async def _helm_history(self, release: str, namespace: str) -> list[dict[str, Any]] | str:
        if self._helm is None:
            return "unavailable: no helm binary (kubernetes.helm_binary)"
        try:
            revisions = await self._helm.history(release=release, namespace=namespace)
        except (TemporaryError, PermanentError) as exc:
            return f"unavailable: {exc}"
        return [_record(r) for r in revisions[-_MAX_HELM_REVISIONS:]]

    async def _failed_requests(self, p: RecordEvidenceParams, *, seconds: timedelta) -> str:
        if self._prometheus is None:
            return "unknown: no Prometheus is configured (prometheus.url)"
        if p.failed_requests_query is None:
            return "unknown: no query"
        span = f"{max(int(seconds.total_seconds()), 1)}s"
        query = p.failed_requests_query.replace("$range", span)
        try:
            value = await self._prometheus.value(query)
        except (TemporaryError, PermanentError) as exc:
            return f"unknown: {exc}"
        if value is None:
            return f"unknown: {query!r} returned no series"
        return f"{round(value)} ({query})"

    async def _switch(self, p: SwitchSelectorParams, *, dry_run: bool) -> dict[str, Any]:
        namespace, service = p.namespace, p.service_name
        key, value = p.selector_label, p.to_value
        switched = await switch_service_selector(
            self._kube, namespace=namespace, service=service, selector_key=key, to_value=value,
            dry_run=dry_run,
        )  # fmt: skip
        result = _record(switched)
        if dry_run:
            return result
        svc = await self._kube.get(Ref("Service", namespace, service))
        ready = await wait_endpoints_ready_for(
            self._kube,
            namespace=namespace,
            service=service,
            selector=svc["spec"].get("selector") or {key: value},
            timeout_seconds=self._rollout_timeout,
            poll_seconds=self._poll,
        )
        if not ready.ready:
            raise PermanentError(
                f"Service {namespace}/{service} has no ready endpoints of {key}={value} after "
                f"{self._rollout_timeout:.0f}s"
            )
        result["endpoints"] = _record(ready)
        return result

    async def _scale(self, p: ScaleDeploymentParams, *, dry_run: bool) -> dict[str, Any]:
        namespace, deployment, replicas = p.namespace, p.deployment, p.replicas
        if p.from_replicas is not None and replicas is not None:
            # A scale-up: respect an HPA, never scale down.
            return _record(
                await scale_up(
                    self._kube, namespace=namespace, deployment=deployment,
                    target_replicas=replicas, max_replicas=replicas, dry_run=dry_run,
                )
            )  # fmt: skip
        if replicas is None:  # a canary's stable side: back to its pre-canary size
            replicas = await pre_canary_replicas(
                self._kube, namespace=namespace, deployment=deployment
            )
            if replicas is None:
                raise NeedsHuman(
                    f"{namespace}/{deployment} records no pre-canary replica count; "
                    "scale the stable deployment by hand"
                )
        return _record(
            await scale(
                self._kube, namespace=namespace, deployment=deployment,
                replicas=replicas, dry_run=dry_run,
            )
        )  # fmt: skip

    async def _helm_rollback(self, p: HelmRollbackParams, *, dry_run: bool) -> dict[str, Any]:
        if self._helm is None:
            raise PermanentError("helm rollback needs the helm binary (kubernetes.helm_binary)")
        try:
            result = await self._helm.rollback(
                release=p.release,
                namespace=p.namespace,
                revision=p.to_revision,
                wait=not dry_run,
                timeout_seconds=self._rollout_timeout,
                dry_run=dry_run,
            )
        except HelmReleasePending as exc:
            raise NeedsHuman(str(exc)) from exc
        return _record(result)

    # -- lookups -----------------------------------------------------------------------
    def _in_scope(self, service: str, namespace: str) -> None:
        """Refuse, before touching anything, a step outside the catalog (defence in depth:
        the decision engine never plans one, but a journal is not a trust boundary)."""
        outside = self._pack.out_of_scope(service, namespace)
        if outside is not None:
            raise ActionRefused(
                f"{outside}; remediator acts only on the catalog's services",
                target=f"{namespace}/{service}", reason="not-in-catalog",
            )  # fmt: skip

    def _workload(self, service: str) -> str:
        spec = self._pack.services.get(service)
        if spec is None:
            raise PermanentError(f"service {service!r} is not in the catalog")
        return spec.workload

    def _canary_spec(self, service: str) -> CanaryRollback:
        spec = self._pack.services.get(service)
        if spec is None or not isinstance(spec.rollback, CanaryRollback):
            raise PermanentError(f"service {service!r} has no canary rollback in the catalog")
        return spec.rollback

    async def _previous_snapshot(self, namespace: str, deployment: str) -> int:
        """The newest revision with a config snapshot, older than the live revision."""
        current = await self._revision(namespace, deployment)
        snapshots = await self._kube.list_all(
            Ref("ConfigMap", namespace), label_selector=f"{SNAPSHOT_DEPLOYMENT}={deployment}"
        )
        older = sorted(
            {
                int(rev)
                for cm in snapshots
                if (
                    rev := (cm["metadata"].get("labels") or {}).get(SNAPSHOT_REVISION, "")
                ).isdigit()
                and int(rev) < current
            }
        )
        if not older:
            raise ActionRefused(
                f"no config snapshot of {deployment} older than its revision {current}; "
                "snapshots are taken when a deploy event arrives",
                target=f"Deployment {namespace}/{deployment}", reason="snapshot-missing",
            )  # fmt: skip
        return older[-1]

    async def after_deploy(self, signal: Signal) -> None:
        """On a trusted deploy event: keep what a later rollback needs and cannot read
        back afterwards (the config this revision runs with; a canary's stable size)."""
        await self.snapshot_for_deploy(signal)
        await self.record_pre_canary(signal)

    async def record_pre_canary(self, signal: Signal) -> None:
        """On a canary's deploy event: the stable side's size, for an abort to restore."""
        spec = self._pack.services.get(signal.service or "")
        if spec is None or not isinstance(spec.rollback, CanaryRollback):
            return
        release = signal.labels.get("revision") or signal.labels.get("version") or signal.key
        result = await record_pre_canary_replicas(
            self._kube, namespace=spec.namespace, deployment=spec.rollback.stable_deployment,
            release=release,
        )  # fmt: skip
        log.info("pre-canary size of %s for %s: %s (%s)", result.deployment, release,
                 result.replicas, result.detail)  # fmt: skip

    def services_with_config(self) -> list[str]:
        return sorted(name for name, spec in self._pack.services.items() if spec.config)

    async def prune_config_snapshots(
        self, service: str, *, policy: RetentionPolicy, now: datetime, dry_run: bool
    ) -> SnapshotRetention:
        """Retention for one service's snapshots. The live revision's and the one a
        ``restore_config`` would go back to now are in use: a plan running or waiting
        for approval restores exactly that one."""
        spec = self._pack.services[service]
        namespace, deployment = spec.namespace, spec.workload
        in_use = {await self._revision(namespace, deployment)}
        with contextlib.suppress(ActionRefused):  # none older: nothing to protect
            in_use.add(await self._previous_snapshot(namespace, deployment))
        return await prune_config_snapshots(
            self._kube, namespace=namespace, deployment=deployment, policy=policy, now=now,
            in_use=in_use, dry_run=dry_run,
        )  # fmt: skip

    async def snapshot_for_deploy(self, signal: Signal) -> None:
        """On a deploy event: keep the config this revision runs with, for a later restore."""
        spec = self._pack.services.get(signal.service or "")
        revision = signal.labels.get("revision", "")
        if spec is None or spec.config is None or not revision.isdigit():
            return
        result = await snapshot_configmaps(
            self._kube, namespace=spec.namespace, deployment=spec.workload,
            revision=int(revision), dry_run=False,
        )  # fmt: skip
        log.info("config of %s revision %s kept as %s", spec.workload, revision,
                 ", ".join(name for _, name in result.snapshots) or "nothing")  # fmt: skip

    async def _revision(self, namespace: str, deployment: str) -> int:
        obj = await self._kube.get(Ref("Deployment", namespace, deployment))
        value = (obj["metadata"].get("annotations") or {}).get(REVISION_ANNOTATION)
        if value is None:
            raise ActionRefused(
                f"{namespace}/{deployment} has no revision yet",
                target=f"Deployment {namespace}/{deployment}", reason="no-revision",
            )  # fmt: skip
        return int(value)


@dataclasses.dataclass(slots=True)
class _HeldLease:
    lease: ServiceLease
    valid_until: datetime  # our last renewal plus the duration: past it, others may take it
    renewing: asyncio.Task[None] | None = None
    lost: bool = False


class LeaseLock:
    """ServiceLock over one Kubernetes Lease per service, held while a plan runs.

    The Lease is renewed every third of its duration while held (``renew_every_seconds``
    overrides it), so a long plan keeps it, and a crashed holder's Lease expires one
    duration after its last renewal. ``held`` turns False once a renewal finds another
    holder (or the Lease gone), or once renewals kept failing until the Lease expired:
    from then on another replica may be acting on the service.
    """

    def __init__(
        self,
        *,
        kube: KubeClient,
        holder: str,
        duration_seconds: int,
        namespace: str | None = None,
        renew_every_seconds: float | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._kube = kube
        self._holder = holder
        self._duration = duration_seconds
        self._namespace = namespace  # None: each service's own namespace
        self._renew_every = (
            duration_seconds / 3 if renew_every_seconds is None else renew_every_seconds
        )
        self._clock = clock
        self._held: dict[str, _HeldLease] = {}

    async def acquire(self, *, service: str, namespace: str) -> bool:
        lease = ServiceLease(
            self._kube,
            namespace=self._namespace or namespace,
            service=service,
            holder=self._holder,
            duration_seconds=self._duration,
            clock=self._clock,
        )
        try:
            grant = await lease.acquire()
        except LeaseHeld:
            return False
        await self._forget(service)  # a stale entry's renewals must not outlive it
        held = _HeldLease(lease=lease, valid_until=grant.expires_at)
        held.renewing = asyncio.create_task(self._renew(held), name=f"lease-{service}")
        self._held[service] = held
        return True

    def held(self, *, service: str) -> bool:
        held = self._held.get(service)
        return held is not None and not held.lost and self._clock() < held.valid_until

    async def release(self, *, service: str, namespace: str) -> None:
        held = await self._forget(service)
        if held is not None:
            # Reads first: a Lease another holder took over is left alone.
            await held.lease.release()

    async def _forget(self, service: str) -> _HeldLease | None:
        held = self._held.pop(service, None)
        if held is not None and held.renewing is not None:
            held.renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await held.renewing
        return held

    async def _renew(self, held: _HeldLease) -> None:
        lease = held.lease
        while True:
            await asyncio.sleep(self._renew_every)
            try:
                held.valid_until = (await lease.renew()).expires_at
            except TemporaryError as exc:
                log.warning("renewing Lease %s/%s failed, will retry: %s",
                            lease.namespace, lease.name, exc)  # fmt: skip
            except PermanentError as exc:
                # LeaseLost, or a refusal (RBAC) that means we cannot keep it: either
                # way another replica may act now. Nothing can undo a step in flight;
                # the executor stops before the next one.
                held.lost = True
                log.error("lost the Lease of %s/%s while acting: %s",
                          lease.namespace, lease.name, exc)  # fmt: skip
                return
