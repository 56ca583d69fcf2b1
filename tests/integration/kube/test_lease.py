"""Lease races on the real apiserver: exactly one of several concurrent racers wins."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from remediator.connectors.kubernetes.client import KubeClient, Ref
from remediator.connectors.kubernetes.errors import LeaseHeld, LeaseLost
from remediator.connectors.kubernetes.lease import LeaseGrant, ServiceLease

pytestmark = pytest.mark.integration


def outcome(
    results: list[LeaseGrant | BaseException],
) -> tuple[list[LeaseGrant], list[BaseException]]:
    wins = [r for r in results if isinstance(r, LeaseGrant)]
    losses = [r for r in results if not isinstance(r, LeaseGrant)]
    return wins, losses


async def test_racers_for_a_new_lease_exactly_one_wins(kc: KubeClient, ns: str) -> None:
    for round_ in range(5):
        racers = [
            ServiceLease(
                kc, namespace=ns, service=f"svc{round_}", holder=f"i-{n}", duration_seconds=30
            )
            for n in range(4)
        ]
        results = await asyncio.gather(*(r.acquire() for r in racers), return_exceptions=True)
        wins, losses = outcome(results)
        assert len(wins) == 1, results
        assert all(isinstance(e, LeaseHeld) and e.holder == wins[0].holder for e in losses), losses
        stored = await kc.get(Ref("Lease", ns, f"remediator-svc{round_}"))
        assert stored["spec"]["holderIdentity"] == wins[0].holder


async def test_expired_lease_takeover_race_and_release(kc: KubeClient, ns: str) -> None:
    old = ServiceLease(kc, namespace=ns, service="web", holder="i-old", duration_seconds=15)
    first = await old.acquire()
    assert first.transitions == 0
    assert (await old.acquire()).holder == "i-old"  # re-acquiring our own is a renew

    with pytest.raises(LeaseHeld):
        await ServiceLease(
            kc, namespace=ns, service="web", holder="i-x", duration_seconds=15
        ).acquire()

    # An hour later (injected clock) i-old's Lease has expired; two instances race.
    def later() -> datetime:
        return datetime.now(UTC) + timedelta(hours=1)

    racers = [
        ServiceLease(kc, namespace=ns, service="web", holder=h, duration_seconds=15, clock=later)
        for h in ("i-a", "i-b", "i-c")
    ]
    wins, losses = outcome(
        await asyncio.gather(*(r.acquire() for r in racers), return_exceptions=True)
    )
    assert len(wins) == 1, (wins, losses)
    assert all(isinstance(e, LeaseHeld) for e in losses), losses
    winner = wins[0]
    assert winner.transitions == 1
    assert winner.acquired_at > first.acquired_at

    with pytest.raises(LeaseLost):
        await old.renew()
    loser = next(r for r in racers if r.holder != winner.holder)
    with pytest.raises(LeaseLost):
        await loser.renew()
    await loser.release()  # not ours: a no-op
    assert (await kc.get(Ref("Lease", ns, "remediator-web")))["spec"][
        "holderIdentity"
    ] == winner.holder

    holder = next(r for r in racers if r.holder == winner.holder)
    renewed = await holder.renew()
    assert renewed.resource_version != winner.resource_version
    await holder.release()
    assert "holderIdentity" not in (await kc.get(Ref("Lease", ns, "remediator-web")))["spec"]
    taken = await old.acquire()  # free again, without waiting for expiry
    assert (taken.holder, taken.transitions) == ("i-old", 2)
