"""One remediator instance acts on a service at a time: a coordination.k8s.io/v1 Lease.

The Lease ``remediator-<service>`` names its holder (the instance id) and when it was
last renewed. Every write carries the resourceVersion that was read (create is
guarded by AlreadyExists instead), so of two instances racing for a free or expired
Lease exactly one write succeeds; the loser re-reads, sees a live holder and gets
LeaseHeld. Expiry is judged with the local clock against ``renewTime``, as client-go's
leader election does; keep clocks in sync (NTP) and durations well above the skew.

Leases are not remediations, so there is no dry-run here: a dry-run daemon still
coordinates with its peers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from remediator.connectors.kubernetes.client import KubeClient, Ref
from remediator.connectors.kubernetes.errors import KubeConflict, KubeNotFound, LeaseHeld, LeaseLost

__all__ = ["LeaseGrant", "ServiceLease"]

_ATTEMPTS = 3  # re-read-and-decide rounds after a lost write race


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseGrant:
    namespace: str
    name: str
    holder: str
    acquired_at: datetime
    renewed_at: datetime
    duration_seconds: int
    transitions: int
    resource_version: str

    @property
    def expires_at(self) -> datetime:
        return self.renewed_at + timedelta(seconds=self.duration_seconds)


class ServiceLease:
    def __init__(
        self,
        kube: KubeClient,
        *,
        namespace: str,
        service: str,
        holder: str,
        duration_seconds: int,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if not holder:
            raise ValueError("holder (the instance id) must be non-empty")
        if duration_seconds < 1:
            raise ValueError("duration_seconds must be >= 1")
        self._kube = kube
        self.namespace = namespace
        self.name = f"remediator-{service}"
        self.holder = holder
        self.duration_seconds = duration_seconds
        self._clock = clock
        self._ref = Ref("Lease", namespace, self.name)

    async def acquire(self) -> LeaseGrant:
        """Create the Lease, take over a free or expired one, or renew our own.

        Raises LeaseHeld when another holder's Lease is still live.
        """
        for _ in range(_ATTEMPTS):
            now = self._clock()
            try:
                lease = await self._kube.get(self._ref)
            except KubeNotFound:
                try:
                    created = await self._kube.create(self._ref, self._new_body(now), dry_run=False)
                except KubeConflict:
                    continue  # someone created it first: re-read and decide again
                return self._grant(created)
            spec = lease.get("spec") or {}
            holder = spec.get("holderIdentity") or None
            if holder not in (None, self.holder) and not self._expired(spec, now):
                raise LeaseHeld(
                    f"Lease {self.namespace}/{self.name} is held by {holder!r} "
                    f"until {_expiry(spec)}",
                    holder=holder,
                )
            new_spec = dict(spec)
            new_spec.update(
                holderIdentity=self.holder,
                leaseDurationSeconds=self.duration_seconds,
                renewTime=_micro(now),
            )
            if holder != self.holder:
                new_spec["acquireTime"] = _micro(now)
                new_spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
            try:
                return self._grant(await self._write(lease, new_spec))
            except KubeConflict:
                continue
        raise LeaseHeld(
            f"Lease {self.namespace}/{self.name}: lost {_ATTEMPTS} write races in a row",
            holder=None,
        )

    async def renew(self) -> LeaseGrant:
        """Push our renewTime forward; LeaseLost when someone else holds it now."""
        for _ in range(_ATTEMPTS):
            try:
                lease = await self._kube.get(self._ref)
            except KubeNotFound as exc:
                raise LeaseLost(f"Lease {self.namespace}/{self.name} was deleted") from exc
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.holder:
                raise LeaseLost(
                    f"Lease {self.namespace}/{self.name} is now held by "
                    f"{spec.get('holderIdentity')!r}"
                )
            new_spec = {**spec, "renewTime": _micro(self._clock())}
            try:
                return self._grant(await self._write(lease, new_spec))
            except KubeConflict:
                continue
        raise LeaseLost(f"Lease {self.namespace}/{self.name}: renew kept conflicting")

    async def release(self) -> None:
        """Give the Lease up (holder cleared, kept for its transition count).

        Does nothing when we do not hold it: releasing must never free someone else's.
        """
        for _ in range(_ATTEMPTS):
            try:
                lease = await self._kube.get(self._ref)
            except KubeNotFound:
                return
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.holder:
                return
            new_spec = {k: v for k, v in spec.items() if k != "holderIdentity"}
            try:
                await self._write(lease, new_spec)
                return
            except KubeConflict:
                continue
        raise LeaseLost(f"Lease {self.namespace}/{self.name}: release kept conflicting")

    # -- helpers ---------------------------------------------------------------------
    def _new_body(self, now: datetime) -> dict[str, Any]:
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.name,
                "labels": {"app.kubernetes.io/managed-by": "remediator"},
            },
            "spec": {
                "holderIdentity": self.holder,
                "leaseDurationSeconds": self.duration_seconds,
                "acquireTime": _micro(now),
                "renewTime": _micro(now),
                "leaseTransitions": 0,
            },
        }

    async def _write(self, lease: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[str, Any]:
        body = {**lease, "spec": dict(spec)}
        return await self._kube.replace(
            self._ref, body, resource_version=lease["metadata"]["resourceVersion"], dry_run=False
        )

    def _expired(self, spec: Mapping[str, Any], now: datetime) -> bool:
        expiry = _expiry(spec)
        return expiry is None or expiry <= now

    def _grant(self, lease: Mapping[str, Any]) -> LeaseGrant:
        spec = lease["spec"]
        return LeaseGrant(
            namespace=self.namespace,
            name=self.name,
            holder=spec["holderIdentity"],
            acquired_at=_parse(spec["acquireTime"]),
            renewed_at=_parse(spec["renewTime"]),
            duration_seconds=int(spec["leaseDurationSeconds"]),
            transitions=int(spec.get("leaseTransitions") or 0),
            resource_version=lease["metadata"]["resourceVersion"],
        )


def _micro(moment: datetime) -> str:
    """A MicroTime as the API writes it: RFC 3339, microseconds, UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _expiry(spec: Mapping[str, Any]) -> datetime | None:
    renewed, duration = spec.get("renewTime"), spec.get("leaseDurationSeconds")
    if not renewed or not duration:
        return None  # no renewTime or duration: nobody can be relying on it
    return _parse(str(renewed)) + timedelta(seconds=int(duration))
