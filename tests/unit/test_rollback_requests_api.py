"""Rollback requests and their approvals over the API, with the real SQLite journal, the
shipped rule pack and the real decision engine deciding each request."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from remediator.domain.approvals import ApprovalConfig
from remediator.domain.auth import Role
from remediator.domain.lifecycle import RemediationStatus
from remediator.domain.rules import RulePack, signal_from_cloudevent
from remediator.engine.decider import DecisionEngine
from remediator.ingress.auth import Authenticator
from remediator.ingress.http import IntakeApp, IntakeState
from remediator.ingress.openapi import openapi_document
from remediator.journal.sqlite import SqliteJournal
from remediator.metrics import Metrics
from remediator.rulefiles import load_rule_pack_from_path
from tests.unit.auth_helpers import bearer, principal
from tests.unit.journal_helpers import outbox_messages
from tests.unit.test_openapi import check

RULES = Path(__file__).resolve().parents[2] / "rules"
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
REQUESTS = "/api/v1/rollback-requests"
PEOPLE = {
    "rita": ("tech-lead",),  # asks; a tech lead herself
    "pam": ("product-manager",),
    "lee": ("tech-lead",),
    "dora": ("dba",),
    "sam": ("security-lead",),
    "otto": ("ops-lead",),
    "carol": ("product-manager", "tech-lead"),
    "nobody": (),
}
# The six scenarios of plan 3.1.2: who approves (one each), and the response time.
SCENARIOS = [
    ("severe_functional_defect", ("pam", "lee"), 30),
    ("data_consistency", ("dora", "lee"), 15),
    ("security_vulnerability", ("sam", "lee"), 10),
    ("performance_degradation", ("otto", "lee"), 60),
    ("user_experience", ("pam",), 120),
    ("third_party_failure", ("lee",), 60),
]


def token(name: str) -> str:
    return f"{name}-token-0123456789abcdef0123456789abcdef"


def authenticator() -> Authenticator:
    people = [
        principal(name, Role.READ, Role.OPERATE, token=token(name), approver_roles=roles)
        for name, roles in PEOPLE.items()
    ]
    people.append(principal("admin", Role.ADMIN, token=token("admin")))
    people.append(principal("reader", Role.READ, token=token("reader")))
    return Authenticator(principals=people)


def deploy(n: int, at: datetime) -> dict[str, Any]:
    return {
        "specversion": "1.0", "id": f"deploy-checkout-{n}", "source": "/cd/pipeline",
        "type": "io.remediator.deployment.succeeded", "time": at.isoformat(),
        "data": {"service": "checkout", "namespace": "shop", "version": f"v1.{n}.0",
                 "revision": str(n), "previous_revision": str(n - 1)},
    }  # fmt: skip


@dataclass
class Api:
    client: TestClient
    journal: SqliteJournal
    intake: IntakeApp
    clock: list[datetime]
    deciding: list[asyncio.Task[int]] = field(default_factory=list)

    async def call(self, path: str, who: str | None, body: Any = None, **headers: str) -> Any:
        sent = {**(bearer(token(who)) if who else {}), **headers}
        data = None if body is None else io.BytesIO(orjson.dumps(body))
        resp = await self.client.post(path, headers=sent, data=data)
        return resp.status, orjson.loads(await resp.read())

    async def request(self, who: str = "rita", **fields: Any) -> tuple[int, Any]:
        body = {"service": "checkout", "scenario": "severe_functional_defect",
                "reason": "checkout returns 500 for every card payment", **fields}  # fmt: skip
        result: tuple[int, Any] = await self.call(REQUESTS, who, body)
        return result

    async def vote(self, rid: str, who: str, verb: str = "approve", **body: Any) -> Any:
        return await self.call(f"/api/v1/remediations/{rid}/{verb}", who, body)


@pytest.fixture(scope="module")
def pack() -> RulePack:
    return load_rule_pack_from_path(RULES)


@pytest.fixture
async def api(tmp_path: Path, pack: RulePack) -> AsyncIterator[Api]:
    journal = SqliteJournal(path=tmp_path / "journal.db")
    await journal.open()
    await journal.record_signals([
        signal_from_cloudevent(deploy(1, NOW - timedelta(days=2)), received_at=NOW),
        signal_from_cloudevent(deploy(2, NOW - timedelta(days=1)), received_at=NOW),
        signal_from_cloudevent(deploy(3, NOW - timedelta(hours=1)), received_at=NOW),
    ])  # fmt: skip
    clock = [NOW]
    engine = DecisionEngine(journal=journal, pack=pack, facts=_NoFacts(), dry_run=False,
                            clock=lambda: clock[0], approvals=ApprovalConfig())  # fmt: skip
    intake = IntakeApp(
        journal=journal, metrics=Metrics(), auth=authenticator(), state=IntakeState(),
        service_labels=("service",), namespace_labels=("namespace",),
        body_limit_bytes=1024 * 1024, retry_after_seconds=1, clock=lambda: clock[0], pack=pack,
        notice_channels=("slack",),
    )  # fmt: skip
    client = TestClient(TestServer(intake.build()))
    await client.start_server()
    opened = Api(client, journal, intake, clock)
    # The engine decides what the API journals, as the runtime wires it (engine.journaled).
    intake.on_new_signals = lambda stored: opened.deciding.append(
        asyncio.create_task(engine.run_once())
    )
    yield opened
    await asyncio.gather(*opened.deciding)
    await client.close()
    await journal.close()


class _NoFacts:
    async def replicas(self, *, service: str, namespace: str) -> tuple[int, int | None] | None:
        return None


async def test_a_request_opens_a_plan_waiting_for_its_approvers(api: Api) -> None:
    status, item = await api.request()
    assert status == 201, item
    assert (item["status"], item["rule"], item["manual"]) == (
        "awaiting_approval", "manual-severe-functional-defect", True,
    )  # fmt: skip
    approval = item["approval"]
    assert approval["requester"] == "rita"
    assert approval["required"] == ["product-manager", "tech-lead"]
    assert approval["missing"] == ["product-manager", "tech-lead"]
    assert approval["response_due_at"] == "2026-11-27T12:30:00.000000Z"
    assert approval["expires_at"] == "2026-11-27T14:00:00.000000Z"
    assert (approval["reason"], approval["target"]) == (
        "checkout returns 500 for every card payment", None,
    )  # fmt: skip
    undo = item["decision"]["steps"][0]
    assert (undo["kind"], undo["params"]["to_revision"]) == ("rollout_undo", 2)
    signal = await api.journal.get_signal(item["signal_id"])
    assert signal is not None
    assert (signal.source.value, signal.kind, signal.received_by) == ("manual", "rollback", "rita")


@pytest.mark.parametrize(("scenario", "approvers", "minutes"), SCENARIOS)
async def test_each_scenario_runs_once_its_approvers_approved(
    api: Api, scenario: str, approvers: tuple[str, ...], minutes: int
) -> None:
    status, item = await api.request(scenario=scenario)
    assert status == 201, item
    rid = item["id"]
    assert item["approval"]["response_time_seconds"] == minutes * 60
    # Refused, each changing nothing: the requester, someone without a named role.
    status, answer = await api.vote(rid, "rita")
    assert status == 409 and "someone else must approve it (four eyes)" in answer["error"]
    status, answer = await api.vote(rid, "nobody")
    assert status == 403 and answer["error"].startswith("forbidden: approving needs one of")
    for n, who in enumerate(approvers, 1):
        status, item = await api.vote(rid, who, comment=f"ok from {who}")
        assert status == 200, item
        last = n == len(approvers)
        assert item["status"] == ("planned" if last else "awaiting_approval")
        if not last:  # the same person again is refused
            status, answer = await api.vote(rid, who)
            assert status == 409 and "a principal counts once" in answer["error"]
    assert [r.id for r in await api.journal.runnable_remediations(limit=10)] == [rid]
    assert item["approval"]["state"] == "approved"
    assert [a["principal"] for a in item["approval"]["approvers"]] == list(approvers)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"service": "nope"}, "service: 'nope' is not a service of the catalog"),
        ({"scenario": "bored"}, "scenario: must be one of severe_functional_defect, "),
        ({"target": "9"}, "target: '9' is not a revision or version trusted deploy history"),
        ({"target": "v1.3.0"}, "target: 'v1.3.0' is what 'checkout' runs now"),
        ({"emergency": "yes"}, "emergency: expected true or false, got a string"),
        ({"reason": ""}, "reason: must not be empty"),
        ({"reason": None}, "reason: required"),
        ({"requester": "pam"}, "requester: not accepted: the requester is the principal"),
        ({"colour": "red"}, "'colour': unknown field (the body takes service, scenario,"),
    ],
)
async def test_a_request_naming_what_is_unknown_is_refused_naming_the_field(
    api: Api, fields: dict[str, Any], message: str
) -> None:
    before = (await api.journal.list_signals(limit=100)).items
    status, answer = await api.request(**fields)
    assert status == 400
    assert answer["error"].startswith(message), answer
    assert (await api.journal.list_signals(limit=100)).items == before  # nothing journaled


async def test_a_request_may_name_a_target_from_trusted_history(api: Api) -> None:
    status, item = await api.request(target="v1.1.0", scenario="third_party_failure")
    assert status == 201
    assert item["approval"]["target"] == "v1.1.0"
    undo = item["decision"]["steps"][0]
    assert (undo["params"]["from_revision"], undo["params"]["to_revision"]) == (3, 1)


async def test_one_request_per_service_waits_at_a_time_and_a_retry_is_the_same_request(
    api: Api,
) -> None:
    key = {"Idempotency-Key": "3f6c1d5e-retry"}
    body = {"service": "checkout", "scenario": "user_experience", "reason": "slow checkout"}
    status, first = await api.call(REQUESTS, "rita", body, **key)
    assert status == 201
    status, again = await api.call(REQUESTS, "rita", body, **key)  # the client retried
    assert (status, again["id"]) == (200, first["id"])
    status, answer = await api.request(who="pam")
    assert status == 409
    assert answer["error"] == (
        f"service: a rollback request for 'checkout' already waits for approval "
        f"({first['id']}); approve, reject or cancel it first"
    )
    manual = [i for i in (await api.journal.list_signals(limit=100)).items
              if i["source"] == "manual"]  # fmt: skip
    assert len(manual) == 1


async def test_reject_ends_it_and_cancel_is_the_requesters_or_an_admins(api: Api) -> None:
    _, item = await api.request(scenario="user_experience")
    rid = item["id"]
    status, answer = await api.vote(rid, "rita", "reject")
    assert status == 409 and answer["error"].endswith("(four eyes); cancel it instead")
    status, item = await api.vote(rid, "pam", "reject", comment="fixed forward instead")
    assert (status, item["status"]) == (200, "rejected")
    assert item["reason"] == "rejected by pam (product-manager): fixed forward instead"
    status, answer = await api.vote(rid, "carol")
    assert (status, answer["error"]) == (409, f"id: {rid} is rejected, not awaiting approval")

    _, item = await api.request(scenario="user_experience")
    rid = item["id"]
    status, answer = await api.vote(rid, "pam", "cancel")
    assert status == 403
    assert answer["error"].startswith("forbidden: the requester (rita) or an admin may cancel")
    status, item = await api.vote(rid, "rita", "cancel", comment="not needed")
    assert (status, item["status"], item["reason"]) == (200, "cancelled",
                                                        "cancelled by rita: not needed")  # fmt: skip
    status, answer = await api.vote(rid, "admin", "cancel")
    assert status == 409 and "only a plan awaiting approval" in answer["error"]

    _, item = await api.request(scenario="user_experience")
    rid = item["id"]
    status, item = await api.vote(rid, "pam")
    assert item["status"] == "planned"
    assert await api.journal.claim_remediation(rid, by="executor", at=NOW,
                                               to=RemediationStatus.RUNNING)  # fmt: skip
    status, answer = await api.vote(rid, "admin", "cancel")
    assert (status, answer["error"]) == (409, f"id: {rid} is running; only a plan awaiting "
                                              "approval, or planned and not yet started, can "
                                              "be cancelled")  # fmt: skip


async def test_an_emergency_needs_one_emergency_approver_and_owes_a_review(api: Api) -> None:
    status, item = await api.request(scenario="data_consistency", emergency=True)
    assert status == 201
    rid = item["id"]
    assert item["approval"]["required"] == ["tech-lead"]  # approvals.emergency_approver_roles
    status, answer = await api.vote(rid, "lee", "review")
    assert (status, answer["error"]) == (409, f"id: {rid} was never approved; no review is owed")
    status, item = await api.vote(rid, "lee")
    assert item["status"] == "planned"
    assert item["approval"]["review"]["status"] == "owed"
    for who in ("rita", "lee"):  # the requester and the approver may not close it
        status, answer = await api.vote(rid, who, "review")
        assert status == 409 and "neither requested nor approved it" in answer["error"]
    status, item = await api.vote(rid, "dora", "review", comment="the emergency was real")
    assert status == 200
    assert item["approval"]["review"] == {
        "status": "closed", "closed_by": "dora", "closed_at": "2026-11-27T12:00:00.000000Z",
        "comment": "the emergency was real",
    }  # fmt: skip
    status, answer = await api.vote(rid, "pam", "review")
    assert status == 409 and "was closed by 'dora'" in answer["error"]
    resp = await api.client.get(f"/api/v1/remediations/{rid}/record", headers=bearer(token("pam")))
    record = await resp.text()
    assert "Emergency review: closed by dora at 2026-11-27 12:00:00 UTC" in record
    assert "Requested by: rita" in record


async def test_an_approval_after_the_expiry_is_refused_and_nothing_runs(api: Api) -> None:
    _, item = await api.request(scenario="third_party_failure")  # 1 h, expires after 4 h
    rid = item["id"]
    api.clock[0] = NOW + timedelta(hours=4)
    status, answer = await api.vote(rid, "lee")
    assert status == 409
    assert answer["error"] == (
        f"id: {rid} expired at 2026-11-27T16:00:00.000000Z (not approved in time); it will not run"
    )
    found = await api.journal.get_remediation(rid)
    assert found is not None and found.status is RemediationStatus.EXPIRED
    assert await api.journal.runnable_remediations(limit=10) == []
    # Never escalated (no clock ran here), and still: the response time was missed.
    resp = await api.client.get(f"/api/v1/remediations/{rid}/record?format=json",
                                headers=bearer(token("pam")))  # fmt: skip
    assert (await resp.json())["approval"]["response"] == "missed"


async def test_a_request_not_decided_in_time_is_accepted_with_202(api: Api) -> None:
    api.intake.on_new_signals = None  # no engine
    api.intake.approvals.decision_wait_seconds = 0.0
    status, answer = await api.request()
    assert status == 202
    assert answer["status"] is None and answer["id"].startswith("rem_")


async def test_a_reader_cannot_request_and_nothing_is_journaled(api: Api) -> None:
    before = (await api.journal.list_signals(limit=100)).items
    status, answer = await api.request(who="reader")
    assert status == 403 and "role 'operate' required" in answer["error"]
    assert (await api.journal.list_signals(limit=100)).items == before


async def test_every_answer_fits_the_openapi_document(api: Api) -> None:
    doc = openapi_document()
    answers: list[tuple[str, int, Any]] = []
    status, item = await api.request()
    answers.append((REQUESTS, status, item))
    rid = item["id"]
    answers.append((REQUESTS, *(await api.request(service="nope"))))
    answers.append((REQUESTS, *(await api.request(who="pam"))))  # 409: one waits already
    approve, reject = "/api/v1/remediations/{id}/approve", "/api/v1/remediations/{id}/reject"
    answers.append((approve, *(await api.vote(rid, "pam"))))  # 200, still waiting
    answers.append((approve, *(await api.vote(rid, "pam"))))  # 409 already
    answers.append((approve, *(await api.vote(rid, "nobody"))))  # 403
    answers.append((approve, *(await api.vote("rem_nope", "pam"))))  # 404
    answers.append((reject, *(await api.vote(rid, "lee", "reject"))))  # 200 rejected
    answers.append(("/api/v1/remediations/{id}/cancel", *(await api.vote(rid, "rita", "cancel"))))
    answers.append(("/api/v1/remediations/{id}/review", *(await api.vote(rid, "pam", "review"))))
    api.intake.on_new_signals = None
    api.intake.approvals.decision_wait_seconds = 0.0
    answers.append((REQUESTS, *(await api.request(service="payments"))))  # 202
    statuses = [status for _, status, _ in answers]
    assert statuses == [201, 400, 409, 200, 409, 403, 404, 200, 409, 409, 202]
    for path, status, body in answers:
        check(doc, path, "post", status, body)
    resp = await api.client.get(f"/api/v1/remediations/{rid}", headers=bearer(token("pam")))
    check(doc, "/api/v1/remediations/{id}", "get", 200, await resp.json())


async def test_a_draining_daemon_refuses_requests_it_would_not_decide(api: Api) -> None:
    api.intake.state.draining = True
    before = (await api.journal.list_signals(limit=100)).items
    resp = await api.client.post(REQUESTS, headers=bearer(token("rita")), json={
        "service": "checkout", "scenario": "user_experience", "reason": "slow"})  # fmt: skip
    assert resp.status == 503 and resp.headers["Retry-After"] == "1"
    check(openapi_document(), REQUESTS, "post", 503, await resp.json())
    assert (await api.journal.list_signals(limit=100)).items == before


async def test_each_answer_is_told_with_its_state_change(api: Api) -> None:
    _, first = await api.request()  # product manager + tech lead
    await api.vote(first["id"], "pam")
    await api.vote(first["id"], "lee", "reject")
    _, second = await api.request(scenario="user_experience")  # the product manager alone
    await api.vote(second["id"], "pam")
    ids = [p.message.id for p in await outbox_messages(api.journal, "slack", limit=10)]
    # (this test's engine queues no notices of its own: these are the API's)
    assert ids == [
        f"slack:{first['id']}:voted:pam",
        f"slack:{first['id']}:skipped",  # the end of a plan that never ran
        f"slack:{second['id']}:approved",
    ]
