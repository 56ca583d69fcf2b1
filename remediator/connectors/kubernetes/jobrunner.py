"""The Kubernetes Job migration runner, and a DSN source reading Secrets.

``JobRunner`` implements ``MigrationRunner``: a revert is a ``batch/v1`` Job in the
service's namespace running the service's own image with the configured rollback
command (the service's code knows its migrations; remediator never imports it). The
Job is created, watched until it completes, fails or times out, and its pod's log tail
is the result's ``output``. The Job gets the DSN from the service's own Secret
(``secretKeyRef``), so it never passes through remediator.

What was reverted is read from the migration state before and after (``status`` is
injected: usually the migrations table read over SQL), so it does not depend on what the
command prints.

``KubeClient`` only knows the kinds the rollback actions touch (no Job, Secret or pod
logs), so this module calls the API through the same ``kubernetes_asyncio``
``ApiClient`` (its generic ``call_api``, plain JSON dicts, like ``KubeClient``).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import SecretStr

from remediator.connectors.kubernetes.client import FIELD_MANAGER
from remediator.connectors.postgres.errors import MigrationFailed
from remediator.connectors.postgres.model import BASE, MigrationStatus, RevertResult
from remediator.connectors.postgres.steps import table_status
from remediator.domain.errors import ConfigError, PermanentError, TemporaryError
from remediator.domain.rules.model import DatabaseSpec, ServiceSpec

__all__ = ["LAST", "JobOutcome", "JobRunner", "job_runner_factory", "run_job", "secret_source"]

log = logging.getLogger(__name__)

LAST = "-1"  # what "{target}" becomes when only the last migration is reverted
TARGET_PLACEHOLDER = "{target}"
CONTAINER = "migrate"
MANAGED_BY = "app.kubernetes.io/managed-by"
SERVICE_LABEL = "remediator.io/service"
_LOG_TAIL_LINES = 200
_REQUEST_TIMEOUT = 30.0


async def _call(
    api: k8s_client.ApiClient,
    method: str,
    path: str,
    *,
    what: str,
    query: list[tuple[str, str]] | None = None,
    body: Any = None,
    text: bool = False,
) -> Any:
    try:
        return await api.call_api(
            path,
            method,
            query_params=query or [],
            header_params={
                "Content-Type": "application/json",
                "Accept": "*/*" if text else "application/json",
            },
            body=body,
            response_types_map={200: "str" if text else "object", 201: "object", 202: "object"},
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
            _request_timeout=_REQUEST_TIMEOUT,
        )
    except ApiException as exc:
        status = int(exc.status or 0)
        message = f"{what}: HTTP {status} {exc.reason or ''}".rstrip()
        if status == 429 or status >= 500 or status == 0:
            raise TemporaryError(message, delay=2.0) from exc
        raise PermanentError(message) from exc
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise TemporaryError(f"{what}: {type(exc).__name__}: {exc}", delay=2.0) from exc


def secret_source(
    api: k8s_client.ApiClient, *, key: str = "dsn"
) -> Callable[[str], Awaitable[str]]:
    """A ``SecretSource`` for ``"<namespace>/<name>"``: the Secret's ``key``, decoded.

    The value is never logged; errors name the Secret and the key only.
    """

    async def read(name: str) -> str:
        namespace, _, secret = name.partition("/")
        if not namespace or not secret:
            raise ConfigError(f"secret {name!r}: expected <namespace>/<name>")
        what = f"Secret {namespace}/{secret}"
        obj = await _call(api, "GET", f"/api/v1/namespaces/{namespace}/secrets/{secret}", what=what)
        data = (obj or {}).get("data") or {}
        if key not in data:
            raise ConfigError(f"{what} has no key {key!r}")
        return base64.b64decode(data[key]).decode("utf-8")

    return read


def _job_name(service: str) -> str:
    # DNS-1123, at most 63 characters (the Job controller labels pods with it).
    base = re.sub(r"[^a-z0-9-]", "-", service.lower()).strip("-")[:40] or "service"
    return f"{base}-revert-{uuid.uuid4().hex[:8]}"


class JobRunner:
    """Migrations reverted by a Job running the service's image (``kind = "job"``)."""

    kind = "job"

    def __init__(
        self,
        *,
        api: k8s_client.ApiClient,
        namespace: str,
        service: str,
        image: str,
        command: Sequence[str],
        status: Callable[[], Awaitable[MigrationStatus]],
        env: Sequence[Mapping[str, Any]] = (),
        service_account: str | None = None,
        timeout_s: float = 1800.0,
        poll_s: float = 1.0,
        ttl_after_finished_s: int = 86400,
        pod_labels: Mapping[str, str] | None = None,
    ) -> None:
        if not command:
            raise ConfigError(f"{service}: the Job runner needs a rollback command")
        self._api = api
        self.namespace = namespace
        self.service = service
        self.image = image
        self.command = tuple(command)
        self._status = status
        self._env = [dict(e) for e in env]
        self.service_account = service_account
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        # Kept a day for people to read; the API server deletes it afterwards.
        self.ttl_after_finished_s = ttl_after_finished_s
        # e.g. what a mesh or a policy needs on the pod; ours win on a clash.
        self.pod_labels = dict(pod_labels or {})

    def __repr__(self) -> str:
        return f"JobRunner(namespace={self.namespace}, image={self.image}, command={self.command})"

    async def status(self) -> MigrationStatus:
        return await self._status()

    async def revert_last(self) -> RevertResult:
        return await self._revert(LAST)

    async def revert_to(self, version: str) -> RevertResult:
        return await self._revert(version or BASE)

    def job_body(self, name: str, target: str) -> dict[str, Any]:
        labels = {MANAGED_BY: "remediator", SERVICE_LABEL: self.service}
        pod_spec: dict[str, Any] = {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": CONTAINER,
                    "image": self.image,
                    "command": [a.replace(TARGET_PLACEHOLDER, target) for a in self.command],
                    "env": [{"name": "REMEDIATOR_TARGET", "value": target}, *self._env],
                }
            ],
        }
        if self.service_account:
            pod_spec["serviceAccountName"] = self.service_account
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "namespace": self.namespace, "labels": labels},
            "spec": {
                # A rollback command is not retried blindly: one pod, one attempt.
                "backoffLimit": 0,
                "activeDeadlineSeconds": max(int(self.timeout_s), 1),
                "ttlSecondsAfterFinished": self.ttl_after_finished_s,
                "template": {
                    "metadata": {"labels": {**self.pod_labels, **labels}},
                    "spec": pod_spec,
                },
            },
        }

    async def _revert(self, target: str) -> RevertResult:
        before = await self.status()
        t0 = time.monotonic()
        name = _job_name(self.service)
        log.info("%s: creating Job %s/%s (%s, target %s)", self.service, self.namespace, name,
                 self.image, target)  # fmt: skip
        finished = await run_job(
            self._api,
            namespace=self.namespace,
            body=self.job_body(name, target),
            timeout_s=self.timeout_s,
            poll_s=self.poll_s,
        )
        after = await self.status()
        reverted = tuple(v for v in reversed(before.applied) if v not in after.applied)
        duration = time.monotonic() - t0
        what = f"Job {self.namespace}/{name}"
        if finished.outcome == "Complete":
            log.info("%s: %s completed in %.1fs", self.service, what, duration)
            return RevertResult(
                reverted=reverted, current=after.current, duration_s=duration, output=finished.logs
            )
        tail = finished.logs[-2000:].strip()
        message = f"{what} {finished.outcome.lower()}: {finished.reason}" + (
            f"; log tail:\n{tail}" if tail else ""
        )
        # Failed, past its deadline, or never reported: whether the command changed
        # anything is unknown, so it is never run again on its own (PermanentError).
        raise MigrationFailed(message, migration=target, reverted=reverted)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobOutcome:
    """How a Job ended: ``Complete``, ``Failed`` or ``Timeout``, and its pods' log tail."""

    name: str
    outcome: str
    reason: str
    logs: str
    duration_s: float


async def run_job(
    api: k8s_client.ApiClient,
    *,
    namespace: str,
    body: Mapping[str, Any],
    timeout_s: float,
    poll_s: float = 1.0,
    container: str = CONTAINER,
) -> JobOutcome:
    """Create the Job ``body`` (its ``metadata.name`` set), watch it to its end and read its
    pods' log tail. A Job that never reported is deleted, so it cannot act later."""
    t0 = time.monotonic()
    name = str(body["metadata"]["name"])
    jobs = f"/apis/batch/v1/namespaces/{namespace}/jobs"
    what = f"Job {namespace}/{name}"
    await _call(
        api,
        "POST",
        jobs,
        what=f"create {what}",
        query=[("fieldManager", FIELD_MANAGER)],
        body=dict(body),
    )
    outcome, reason = await _watch(api, f"{jobs}/{name}", what=what, timeout_s=timeout_s,
                                   poll_s=poll_s)  # fmt: skip
    output = await _logs(api, namespace, name, container=container)
    if outcome == "Timeout":
        await _delete(api, f"{jobs}/{name}", what=what)
    return JobOutcome(name=name, outcome=outcome, reason=reason, logs=output,
                      duration_s=time.monotonic() - t0)  # fmt: skip


async def _watch(
    api: k8s_client.ApiClient, path: str, *, what: str, timeout_s: float, poll_s: float
) -> tuple[str, str]:
    """("Complete" | "Failed" | "Timeout", reason) once the Job has finished."""
    # The Job's own activeDeadlineSeconds fails it; this margin only covers a
    # controller that never reports.
    deadline = time.monotonic() + timeout_s + 30.0
    while True:
        job = await _call(api, "GET", path, what=what)
        for condition in (job.get("status") or {}).get("conditions") or []:
            if condition.get("status") != "True":
                continue
            kind = condition.get("type")
            if kind in ("Complete", "Failed"):
                reason = condition.get("reason") or ""
                detail = condition.get("message") or ""
                return str(kind), f"{reason} {detail}".strip() or str(kind)
        if time.monotonic() >= deadline:
            return "Timeout", f"not finished after {timeout_s:g}s"
        await asyncio.sleep(poll_s)


async def _logs(api: k8s_client.ApiClient, namespace: str, job: str, *, container: str) -> str:
    """The tail of the Job's pod log; a note when there is none (no kubelet, GC'd)."""
    pods_path = f"/api/v1/namespaces/{namespace}/pods"
    try:
        pods = await _call(
            api,
            "GET",
            pods_path,
            what=f"pods of Job {job}",
            query=[("labelSelector", f"job-name={job}")],
        )
        names = [p["metadata"]["name"] for p in (pods or {}).get("items") or []]
        if not names:
            return f"(no pod of Job {job} found)"
        parts = []
        for pod in names:
            text = await _call(
                api,
                "GET",
                f"{pods_path}/{pod}/log",
                what=f"log of pod {pod}",
                query=[("container", container), ("tailLines", str(_LOG_TAIL_LINES))],
                text=True,
            )
            parts.append(f"--- pod {pod}\n{text or ''}")
        return "\n".join(parts)
    except (TemporaryError, PermanentError) as exc:
        # Logs are evidence, not the outcome: their absence never fails the Job's result.
        return f"(logs unavailable: {exc})"


async def _delete(api: k8s_client.ApiClient, path: str, *, what: str) -> None:
    try:
        await _call(
            api,
            "DELETE",
            path,
            what=f"delete {what}",
            body={"propagationPolicy": "Background"},
        )
    except (TemporaryError, PermanentError) as exc:
        log.warning("could not delete %s: %s", what, exc)


def job_runner_factory(
    api: k8s_client.ApiClient,
) -> Callable[[str, ServiceSpec, DatabaseSpec, SecretStr], JobRunner]:
    """The ``JobRunnerFactory`` the PostgreSQL step runner takes: one catalog entry's Job.

    The Job reads the DSN from the service's Secret itself; remediator reads the
    migrations table (with its own copy of the DSN) to know what was reverted.
    """

    def make(service: str, spec: ServiceSpec, db: DatabaseSpec, dsn: SecretStr) -> JobRunner:
        if db.job is None or db.dsn_secret is None:  # the model requires both for "job"
            raise ConfigError(f"service {service!r}: runner job needs database.job and dsn_secret")
        job = db.job
        secret_env = {
            "name": job.dsn_env_name,
            "valueFrom": {"secretKeyRef": {"name": db.dsn_secret, "key": job.dsn_secret_key}},
        }
        table = db.migrations_table

        async def status() -> MigrationStatus:
            return await table_status(dsn=dsn, table=table, kind="job")

        return JobRunner(
            api=api,
            namespace=spec.namespace,
            service=service,
            image=job.image,
            command=job.command,
            status=status,
            env=[secret_env],
            service_account=job.service_account,
            timeout_s=job.timeout.total_seconds(),
        )

    return make
