"""Rollback requests by people (plan 3.1.2), as signals the rules decide like any other.

A request is journaled as a signal of source ``manual`` and kind ``rollback``; its
scenario, optional target and emergency flag are labels (the shipped ``manual-*`` rules
match ``scenario``), its reason an annotation, its requester the principal that sent it.
The decision engine plans it, and the plan waits for approval; nothing else about a
request is special, so it goes the one path every signal goes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from remediator.domain.signals import Signal, Source, Status

REQUEST_KIND = "rollback"
SCENARIO_LABEL = "scenario"
TARGET_LABEL = "target"
EMERGENCY_LABEL = "emergency"
REASON_ANNOTATION = "reason"


@dataclass(frozen=True, slots=True, kw_only=True)
class RollbackRequest:
    service: str
    namespace: str
    scenario: str
    reason: str
    target: str | None = None
    emergency: bool = False

    def signal(self, *, requester: str, received_at: datetime, idempotency: str) -> Signal:
        """The request as a signal; ``idempotency`` (unique per request, or the client's
        Idempotency-Key) makes a retried request the same signal."""
        labels = {
            "service": self.service,
            "namespace": self.namespace,
            SCENARIO_LABEL: self.scenario,
            EMERGENCY_LABEL: "true" if self.emergency else "false",
        }
        if self.target is not None:
            labels[TARGET_LABEL] = self.target
        return Signal(
            key=request_key(requester=requester, idempotency=idempotency),
            source=Source.MANUAL,
            kind=REQUEST_KIND,
            status=Status.EVENT,
            service=self.service,
            namespace=self.namespace,
            labels=labels,
            annotations={REASON_ANNOTATION: self.reason},
            starts_at=received_at,
            ends_at=None,
            received_at=received_at,
            received_by=requester,
        )


def request_key(*, requester: str, idempotency: str) -> str:
    digest = hashlib.blake2b(idempotency.encode(), digest_size=16).hexdigest()
    return f"manual\x1f{requester}\x1f{digest}"


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestFacts:
    """What a manual signal says about the request it carries."""

    requester: str | None
    scenario: str | None
    reason: str | None
    target: str | None
    emergency: bool


def request_facts(signal: Signal) -> RequestFacts:
    """The request a signal carries; an alert's or an event's carries none (an alert can
    neither choose a target nor claim an emergency)."""
    if signal.source is not Source.MANUAL:
        return RequestFacts(requester=None, scenario=None, reason=None, target=None,
                            emergency=False)  # fmt: skip
    labels = signal.labels
    return RequestFacts(
        requester=signal.received_by,
        scenario=labels.get(SCENARIO_LABEL) or None,
        reason=signal.annotations.get(REASON_ANNOTATION) or None,
        target=labels.get(TARGET_LABEL) or None,
        emergency=labels.get(EMERGENCY_LABEL) == "true",
    )
