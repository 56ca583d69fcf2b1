"""The health check after a change allows a grace period: traffic moves to the restored
pods in the seconds after a rollback, and one failed GET then is not a failed rollback.
A real HTTP endpoint; the grace is counted on an injected clock (no wall-clock waits)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from remediator.connectors.kubernetes.client import KubeClient
from remediator.connectors.kubernetes.steps import KubernetesStepRunner, VerificationFailed
from remediator.domain.steps import VerifyHealthParams, VerifyHealthStep
from remediator.rulefiles import load_rule_pack_from_path

pytestmark = pytest.mark.integration

RULES = Path(__file__).resolve().parents[3] / "rules"


class FakeTime:
    """monotonic() and sleep() over one counter: a sleep moves time, nothing waits."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
async def endpoint() -> AsyncIterator[tuple[str, list[int]]]:
    """/healthz answers the statuses queued in the list, then 200."""
    queued: list[int] = []
    answered: list[int] = []

    async def health(_: web.Request) -> web.Response:
        status = queued.pop(0) if queued else 200
        answered.append(status)
        return web.Response(status=status, text="ok" if status == 200 else "failing")

    app = web.Application()
    app.router.add_get("/healthz", health)
    server = TestServer(app)
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}/healthz", queued
    finally:
        await server.close()


def runner(kc: KubeClient, time: FakeTime, grace: float) -> KubernetesStepRunner:
    return KubernetesStepRunner(
        kube=kc, pack=load_rule_pack_from_path(RULES), health_grace_seconds=grace,
        monotonic=time.monotonic, sleep=time.sleep,
    )  # fmt: skip


def step(url: str) -> VerifyHealthStep:
    return VerifyHealthStep(params=VerifyHealthParams(namespace="shop", url=url), reason="test")


async def test_a_health_url_failing_for_a_moment_after_the_change_passes(
    kc: KubeClient, endpoint: tuple[str, list[int]]
) -> None:
    url, queued = endpoint
    queued += [503, 503]
    time = FakeTime()
    detail = await runner(kc, time, grace=60).run(
        step(url), service="checkout", dry_run=False, context={}
    )
    assert (detail["result"], detail["attempts"]) == ("passed", 3)
    assert time.slept == [2.0, 2.0]


async def test_a_health_url_failing_past_the_grace_fails_verification(
    kc: KubeClient, endpoint: tuple[str, list[int]]
) -> None:
    url, queued = endpoint
    queued += [500] * 100
    time = FakeTime()
    with pytest.raises(VerificationFailed) as failed:
        await runner(kc, time, grace=10).run(
            step(url), service="checkout", dry_run=False, context={}
        )
    assert "HTTP 500" in str(failed.value) and "6 attempts in 10s" in str(failed.value)
    assert failed.value.detail["attempts"] == 6
    assert time.now == 10


async def test_no_grace_checks_once(kc: KubeClient, endpoint: tuple[str, list[int]]) -> None:
    url, queued = endpoint
    queued += [503]
    with pytest.raises(VerificationFailed):
        await runner(kc, FakeTime(), grace=0).run(
            step(url), service="checkout", dry_run=False, context={}
        )
