"""Alertmanager-shaped payloads for tests and benchmarks."""

from __future__ import annotations

from typing import Any


def alert(
    *,
    name: str = "HighErrorRate",
    service: str | None = "checkout",
    namespace: str = "shop",
    status: str = "firing",
    starts_at: str = "2026-11-27T10:00:00.123456789Z",
    fingerprint: str | None = None,
    extra_labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    labels = {"alertname": name, "namespace": namespace, "severity": "critical"}
    if service is not None:
        labels["service"] = service
    labels.update(extra_labels or {})
    body: dict[str, Any] = {
        "status": status,
        "labels": labels,
        "annotations": {"summary": f"{name} on {service}"},
        "startsAt": starts_at,
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-11-27T10:30:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=up",
    }
    if fingerprint is not None:
        body["fingerprint"] = fingerprint
    return body


def payload(
    alerts: list[dict[str, Any]], *, receiver: str = "remediator", **extra: Any
) -> dict[str, Any]:
    status = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
    return {
        "version": "4",
        "groupKey": '{}:{alertname="HighErrorRate"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": receiver,
        "groupLabels": {"alertname": "HighErrorRate"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": alerts,
        **extra,
    }


def storm(n: int, *, prefix: str = "fp") -> dict[str, Any]:
    """One group of n distinct firing alerts, each as large as a typical real one (~800 B)."""
    alerts = []
    for i in range(n):
        body = alert(
            fingerprint=f"{prefix}{i:08x}",
            extra_labels={
                "pod": f"checkout-{i}",
                "container": "checkout",
                "instance": f"10.0.{i // 250}.{i % 250}:8080",
                "job": "kubernetes-pods",
                "node": f"worker-{i % 7}",
                "prometheus": "monitoring/k8s",
            },
        )
        body["annotations"]["description"] = (
            f"Error ratio for checkout pod checkout-{i} has been above 5% for 10 minutes. "
            "Check recent deploys and the service dashboard before paging the owning team."
        )
        body["annotations"]["runbook_url"] = "https://runbooks.example.com/checkout/high-error-rate"
        alerts.append(body)
    return payload(alerts)
