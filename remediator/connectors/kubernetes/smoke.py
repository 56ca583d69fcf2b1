"""The catalog's smoke test, run as a Kubernetes Job after a change.

The Job runs in the service's namespace with the template's image and command, one
attempt, and is kept an hour for people to read; its outcome and log tail are the
evidence the record shows.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from kubernetes_asyncio import client as k8s_client

from remediator.connectors.kubernetes.jobrunner import (
    MANAGED_BY,
    SERVICE_LABEL,
    JobOutcome,
    run_job,
)
from remediator.domain.rules.model import SmokeTestSpec

__all__ = ["CONTAINER", "PURPOSE_LABEL", "run_smoke_test", "smoke_job_body"]

CONTAINER = "smoke"
PURPOSE_LABEL = "remediator.io/purpose"
_KEEP_SECONDS = 3600


def _job_name(service: str) -> str:
    base = re.sub(r"[^a-z0-9-]", "-", service.lower()).strip("-")[:40] or "service"
    return f"{base}-smoke-{uuid.uuid4().hex[:8]}"


def smoke_job_body(
    *, namespace: str, service: str, spec: SmokeTestSpec, name: str
) -> dict[str, Any]:
    labels = {MANAGED_BY: "remediator", SERVICE_LABEL: service, PURPOSE_LABEL: "smoke-test"}
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [{"name": CONTAINER, "image": spec.image, "command": list(spec.command)}],
    }
    if spec.service_account:
        pod_spec["serviceAccountName"] = spec.service_account
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "backoffLimit": 0,  # a failing smoke test is the answer, not something to retry
            "activeDeadlineSeconds": max(int(spec.timeout.total_seconds()), 1),
            "ttlSecondsAfterFinished": _KEEP_SECONDS,
            "template": {"metadata": {"labels": {**spec.labels, **labels}}, "spec": pod_spec},
        },
    }


async def run_smoke_test(
    api: k8s_client.ApiClient,
    *,
    namespace: str,
    service: str,
    spec: SmokeTestSpec,
    poll_s: float = 1.0,
) -> JobOutcome:
    body = smoke_job_body(namespace=namespace, service=service, spec=spec,
                          name=_job_name(service))  # fmt: skip
    return await run_job(api, namespace=namespace, body=body,
                         timeout_s=spec.timeout.total_seconds(), poll_s=poll_s,
                         container=CONTAINER)  # fmt: skip
