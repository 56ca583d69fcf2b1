"""Who may do what over the API, against the real SQLite journal.

The forged-input and authorization table of issue 12: each mutating route refuses each
role it does not ask for (403, the journal unchanged), the webhook token can only post
alerts, unauthenticated requests touch the journal not at all, and approvals are the
authenticated principal's, each filling one of the plan's approver roles, within the
request's expiry.
"""

from __future__ import annotations

import io
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from remediator.domain.approvals import ApprovalConfig, ApprovalRequest, policy_for
from remediator.domain.auth import Role, hash_token
from remediator.domain.lifecycle import RemediationStatus
from remediator.domain.plans import ActionKind, Plan
from remediator.domain.signals import Signal, Source, Status
from remediator.ingress.auth import Authenticator, FailedAuthLimiter, WebhookCredential
from remediator.ingress.http import IntakeApp, IntakeState
from remediator.journal.sqlite import SqliteJournal
from remediator.metrics import Metrics
from remediator.ports import DecisionRecord, NewRemediation
from tests.unit.auth_helpers import bearer, principal
from tests.unit.payloads import alert, payload

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
GATED_RULE = "migration-failed-alert-revert"  # approvers dba, tech-lead; within 15m
OPEN_RULE = "manual-rollback"  # names no approvers
WEBHOOK = "/api/v1/webhooks/alertmanager"

TOKENS = {
    "webhook": "webhook-token-00112233445566778899aabbccddeeff",
    "ingester": "ingester-token-0123456789abcdef0123456789ab",
    "reader": "reader-token-fedcba9876543210fedcba98765432",
    "operator": "operator-token-13579bdf02468ace13579bdf0246",
    "lead": "lead-token-2468ace013579bdf2468ace013579bdf",
    "admin": "admin-token-0f1e2d3c4b5a69788796a5b4c3d2e1f0",
}


def authenticator() -> Authenticator:
    return Authenticator(
        principals=[
            principal("ingester", Role.INGEST, token=TOKENS["ingester"]),
            principal("reader", Role.READ, token=TOKENS["reader"]),
            # operate without read: it may act, not look
            principal("operator", Role.OPERATE, token=TOKENS["operator"], approver_roles=["dba"]),
            principal(
                "lead",
                Role.READ,
                Role.OPERATE,
                token=TOKENS["lead"],
                approver_roles=["tech-lead", "product-manager"],
            ),
            principal("admin", Role.ADMIN, token=TOKENS["admin"]),
        ],
        webhook=WebhookCredential(bearer_token=TOKENS["webhook"]),
    )


WRITES = {
    "record_signals",
    "record_decisions",
    "approve_remediation",
    "cast_vote",
    "cancel_remediation",
    "close_review",
    "mark_escalated",
    "expire_approval",
    "set_circuit",
    "enqueue",
    "claim_remediation",
    "finish_remediation",
    "prune",
}


class Watched:
    """The real journal; every call is noted (our own port, so a proxy is fair)."""

    def __init__(self, inner: SqliteJournal) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if not callable(attribute):
            return attribute

        def noted(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return attribute(*args, **kwargs)

        return noted

    @property
    def writes(self) -> list[str]:
        return [c for c in self.calls if c in WRITES]


@dataclass
class Api:
    client: TestClient
    journal: SqliteJournal
    watched: Watched
    intake: IntakeApp
    db: Path
    clock: list[datetime]
    monotonic: list[float]

    async def call(
        self, method: str, path: str, who: str | None, body: Any = None, **headers: str
    ) -> tuple[int, Any]:
        sent = {**(bearer(TOKENS[who]) if who else {}), **headers}
        data = None if body is None else io.BytesIO(orjson.dumps(body))
        resp = await self.client.request(method, path, headers=sent, data=data)
        text = await resp.read()
        return resp.status, orjson.loads(text) if text[:1] in (b"{", b"[") else text

    def dump(self) -> list[str]:
        """Every row of every table: what "the journal did not change" compares."""
        with sqlite3.connect(self.db) as conn:
            return list(conn.iterdump())


MakeApi = Callable[..., Awaitable[Api]]


@pytest.fixture
async def make_api(tmp_path: Path) -> AsyncIterator[MakeApi]:
    opened: list[tuple[TestClient, SqliteJournal]] = []

    async def make(**kwargs: Any) -> Api:
        db = tmp_path / f"journal{len(opened)}.db"
        journal = SqliteJournal(path=db)
        await journal.open()
        watched = Watched(journal)
        clock, monotonic = [NOW], [1000.0]
        intake = IntakeApp(
            journal=watched,  # type: ignore[arg-type]
            metrics=Metrics(),
            auth=authenticator(),
            state=IntakeState(),
            service_labels=("service",),
            namespace_labels=("namespace",),
            body_limit_bytes=16 * 1024 * 1024,
            retry_after_seconds=1,
            clock=lambda: clock[0],
            failed_auth=FailedAuthLimiter(
                max_failures=kwargs.pop("max_failures", 1000),
                window_seconds=60,
                max_clients=100,
                monotonic=lambda: monotonic[0],
            ),
            **kwargs,
        )
        client = TestClient(TestServer(intake.build()))
        await client.start_server()
        opened.append((client, journal))
        return Api(client, journal, watched, intake, db, clock, monotonic)

    yield make
    for client, journal in opened:
        await client.close()
        await journal.close()


async def awaiting(
    journal: SqliteJournal,
    rid: str,
    *,
    rule: str = GATED_RULE,
    approvers: tuple[str, ...] = ("dba", "tech-lead"),
    created_at: datetime = NOW - timedelta(minutes=5),
    seq: int = 1,
) -> None:
    """A plan whose rule requires approval, as the decision engine journals it: every
    named role a seat, answered within 15 minutes, expiring after an hour."""
    plan = Plan(service="checkout", namespace="shop", rule=rule,
                requested_action=ActionKind.REVERT_MIGRATION, action=ActionKind.REVERT_MIGRATION,
                steps=(), require_approval=True, approvers=approvers, signal_id=f"sig_{rid}")  # fmt: skip
    remediation = NewRemediation(
        id=rid, signal_id=f"sig_{rid}", service="checkout", namespace="shop", rule=rule,
        action=ActionKind.REVERT_MIGRATION, status=RemediationStatus.AWAITING_APPROVAL, reason=None, manual=False,
        automated=True, created_at=created_at, decision=plan.to_dict(), explanation="test",
        approval=ApprovalRequest(
            policy=policy_for(approvers=approvers, response_time=timedelta(minutes=15),
                              emergency=False, config=ApprovalConfig()),
            requested_at=created_at,
        ),
    )  # fmt: skip
    assert await journal.record_decisions(
        [DecisionRecord(signal_seq=seq, signal_id=f"sig_{rid}", service="checkout",
                        outcome="plan", reason=None, rule=rule, decided_at=created_at,
                        explanation="test", remediation=remediation)],
        cursor=seq - 1,
        through_seq=seq,
    )  # fmt: skip


APPROVE = "/api/v1/remediations/rem_gate/approve"
REJECT = "/api/v1/remediations/rem_gate/reject"
CANCEL = "/api/v1/remediations/rem_gate/cancel"
REVIEW = "/api/v1/remediations/rem_gate/review"
REQUEST = "/api/v1/rollback-requests"
REQUEST_BODY = {"service": "checkout", "scenario": "user_experience", "reason": "x"}
RESET = "/api/v1/circuit/reset"
HOOK_BODY = payload([alert(fingerprint="forged")])

# Each mutating route, and every principal lacking the role it asks for.
REFUSALS = [
    ("POST", WEBHOOK, HOOK_BODY, "ingest", who)
    for who in ("reader", "operator", "lead")
] + [
    ("POST", path, body, "operate", who)
    for path, body in ((APPROVE, {"comment": "ok"}), (REJECT, {}), (CANCEL, {}), (REVIEW, {}),
                       (REQUEST, REQUEST_BODY), (RESET, None))
    for who in ("webhook", "ingester", "reader")
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "body", "role", "who"), REFUSALS)
async def test_each_mutating_route_refuses_each_role_it_does_not_ask_for(
    make_api: MakeApi, method: str, path: str, body: Any, role: str, who: str
) -> None:
    api = await make_api()
    await awaiting(api.journal, "rem_gate")
    await api.journal.set_circuit(open=True, reason="3 failed remediations in a row", at=NOW)
    before = api.dump()
    status, answer = await api.call(method, path, who, body)
    assert status == 403
    held = {"webhook": "ingest", "ingester": "ingest", "reader": "read", "operator": "operate",
            "lead": "operate, read"}[who]  # fmt: skip
    assert answer == {"error": f"forbidden: role '{role}' required (principal '{who}' has: {held})"}
    assert api.watched.calls == []  # refused before the journal was asked anything
    assert api.dump() == before


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/signals",
        "/api/v1/remediations",
        "/api/v1/remediations/rem_gate",
        "/api/v1/remediations/rem_gate/record",
        "/api/v1/circuit",
    ],
)
async def test_the_webhook_token_cannot_read(make_api: MakeApi, path: str) -> None:
    api = await make_api()
    status, answer = await api.call("GET", path, "webhook")
    assert status == 403
    assert answer["error"] == "forbidden: role 'read' required (principal 'webhook' has: ingest)"
    assert api.watched.calls == []


SECURED = [
    ("POST", WEBHOOK, HOOK_BODY),
    ("GET", "/api/v1/signals", None),
    ("GET", "/api/v1/remediations", None),
    ("GET", "/api/v1/remediations/rem_gate", None),
    ("GET", "/api/v1/remediations/rem_gate/record", None),
    ("POST", APPROVE, {"comment": "x" * 1024 * 1024}),
    ("POST", REJECT, {}),
    ("POST", CANCEL, {}),
    ("POST", REVIEW, {}),
    ("POST", REQUEST, REQUEST_BODY),
    ("GET", "/api/v1/circuit", None),
    ("POST", RESET, None),
]


@pytest.mark.parametrize(("method", "path", "body"), SECURED)
@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer nope",
        f"Bearer {TOKENS['admin'][:-1]}",
        f"Basic {TOKENS['admin']}",
        f"Bearer {hash_token(TOKENS['admin'])}",
        "Bearer",
    ],
)
async def test_unauthenticated_requests_cause_no_journal_call_at_all(
    make_api: MakeApi, method: str, path: str, body: Any, authorization: str | None
) -> None:
    api = await make_api()
    await awaiting(api.journal, "rem_gate")
    before = api.dump()
    headers = {} if authorization is None else {"Authorization": authorization}
    status, answer = await api.call(method, path, None, body, **headers)
    assert status == 401
    assert answer == {"error": "missing or wrong credentials"}
    assert api.watched.calls == []
    assert api.dump() == before


async def test_the_issues_forged_approval_is_refused_and_ends_the_late_plan(
    make_api: MakeApi,
) -> None:
    # Issue 12, item 3: the webhook token, a 1 MiB `by` with newlines, three days late.
    api = await make_api()
    await awaiting(api.journal, "rem_gate")
    api.clock[0] = NOW + timedelta(days=3)
    before = api.dump()
    forged = {"by": ("mallory\n" * 131072)}
    status, answer = await api.call("POST", APPROVE, "webhook", forged)
    assert status == 403 and "role 'operate' required" in answer["error"]
    # With the operate role the same body is refused for its `by` ...
    status, answer = await api.call("POST", APPROVE, "lead", forged)
    assert status == 400 and answer["error"].startswith("by: not accepted: who acts is")
    # ... a 1 MiB comment for its size ...
    status, answer = await api.call("POST", APPROVE, "lead", {"comment": "x" * 1024 * 1024})
    assert (status, answer) == (400, {"error": "comment: at most 500 characters, got 1048576"})
    assert api.watched.writes == []
    assert api.dump() == before
    # ... and a proper body for the expired request (issue 15: it ends expired, and the
    # approval is not recorded: nothing runs).
    status, answer = await api.call("POST", APPROVE, "lead", {"comment": "late"})
    assert status == 409
    assert answer["error"] == (
        "id: rem_gate expired at 2026-11-27T10:55:00.000000Z (not approved in time); it will "
        "not run"
    )
    stored = await api.journal.get_remediation("rem_gate")
    assert stored is not None and stored.status is RemediationStatus.EXPIRED
    assert stored.approval is not None and stored.approval.votes == ()
    assert await api.journal.runnable_remediations(limit=10) == []


async def test_every_named_role_must_approve_each_by_its_own_principal(
    make_api: MakeApi,
) -> None:
    api = await make_api()
    await awaiting(api.journal, "rem_gate")
    approved: list[None] = []
    api.intake.on_approved = lambda: approved.append(None)
    status, item = await api.call("POST", APPROVE, "lead", {"comment": "checked with the team"})
    assert status == 200
    assert item["status"] == "awaiting_approval"  # the dba seat is still empty
    assert item["approval"]["missing"] == ["dba"]
    assert item["approval"]["approvers"] == [
        {"role": "tech-lead", "principal": "lead", "at": "2026-11-27T10:00:00.000000Z"}
    ]
    assert approved == []
    status, answer = await api.call("POST", APPROVE, "lead", {})
    assert status == 409 and "'lead' approved rem_gate already at" in answer["error"]
    status, item = await api.call("POST", APPROVE, "operator", {"comment": "backup checked"})
    assert status == 200
    assert item["status"] == "planned"
    assert (item["approved_by"], item["approved_as"], item["approval_comment"]) == (
        "operator", ["dba"], "backup checked"
    )  # fmt: skip
    assert approved == [None]
    assert api.watched.writes == ["cast_vote", "cast_vote"]
    status, record = await api.call("GET", "/api/v1/remediations/rem_gate/record?format=json",
                                    "lead")  # fmt: skip
    assert status == 200
    assert record["approvers"] == ["dba", "tech-lead"]
    entries = [e["detail"] for e in record["timeline"] if e["step"] == "approved"]
    assert entries == ["by lead as tech-lead: checked with the team",
                       "by operator as dba: backup checked"]  # fmt: skip
    assert record["approval"]["response"] == "met"
    # Approving again: it is no longer waiting.
    status, answer = await api.call("POST", APPROVE, "lead", {})
    assert (status, answer) == (409, {"error": "id: rem_gate is planned, not awaiting approval"})


async def test_an_operator_without_a_named_approver_role_is_refused(make_api: MakeApi) -> None:
    api = await make_api()
    await awaiting(api.journal, "rem_gate", approvers=("security-lead",))
    before = api.dump()
    for who, has in (("admin", "no approver role"), ("lead", "product-manager, tech-lead")):
        for path, verb in ((APPROVE, "approving"), (REJECT, "rejecting")):
            status, answer = await api.call("POST", path, who, {})
            assert status == 403
            assert answer["error"] == (
                f"forbidden: {verb} needs one of the approver roles 'security-lead' "
                f"(principal '{who}' has: {has})"
            )
    assert api.watched.writes == []
    assert api.dump() == before


async def test_a_plan_naming_no_approvers_takes_any_one_operator(make_api: MakeApi) -> None:
    api = await make_api()
    await awaiting(api.journal, "rem_open", rule=OPEN_RULE, approvers=())
    status, item = await api.call("POST", "/api/v1/remediations/rem_open/approve", "operator")
    assert status == 200
    assert (item["status"], item["approved_by"], item["approved_as"]) == (
        "planned", "operator", None,
    )  # fmt: skip


async def test_a_rejection_ends_the_plan_and_names_who_and_why(make_api: MakeApi) -> None:
    api = await make_api()
    await awaiting(api.journal, "rem_gate")
    status, item = await api.call("POST", REJECT, "operator", {"comment": "no backup yet"})
    assert status == 200
    assert (item["status"], item["reason"]) == ("rejected", "rejected by operator (dba): "
                                                            "no backup yet")  # fmt: skip
    status, answer = await api.call("POST", APPROVE, "lead", {})
    assert (status, answer) == (409, {"error": "id: rem_gate is rejected, not awaiting approval"})
    assert await api.journal.runnable_remediations(limit=10) == []


async def test_a_circuit_reset_records_its_principal(make_api: MakeApi) -> None:
    api = await make_api()
    await api.journal.set_circuit(open=True, reason="3 failed remediations in a row", at=NOW)
    status, body = await api.call("POST", RESET, "operator")
    assert status == 200
    assert body == {"open": False, "reason": None, "changed_at": "2026-11-27T10:00:00+00:00",
                    "changed_by": "operator"}  # fmt: skip
    record = await api.journal.circuit()
    assert (record.open, record.changed_by) == (False, "operator")


async def test_signals_record_the_principal_that_sent_them(make_api: MakeApi) -> None:
    api = await make_api()
    for who in ("webhook", "ingester", "admin"):
        status, _ = await api.call("POST", WEBHOOK, who, payload([alert(fingerprint=who)]))
        assert status == 200
    items = (await api.journal.list_signals()).items
    assert sorted(i["received_by"] for i in items) == ["admin", "ingester", "webhook"]
    stored = await api.journal.get_signal(items[0]["id"])
    assert stored is not None and stored.received_by == items[0]["received_by"]


async def test_an_address_past_its_failures_gets_429_even_with_a_good_credential(
    make_api: MakeApi,
) -> None:
    api = await make_api(max_failures=3)
    for _ in range(3):
        assert (await api.call("GET", "/api/v1/circuit", None, Authorization="Bearer nope"))[0] == (
            401
        )
    resp = await api.client.get("/api/v1/circuit", headers=bearer(TOKENS["admin"]))
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "60"
    answer = await resp.json()
    assert answer == {"error": "too many failed authentications from 127.0.0.1: retry in 60s"}
    status, _ = await api.call("POST", WEBHOOK, "webhook", HOOK_BODY)
    assert status == 429
    assert api.watched.calls == []
    registry = api.intake.metrics.registry
    assert registry.get_sample_value("remediator_auth_throttled_total") == 2
    assert registry.get_sample_value("remediator_auth_failures_total", {"reason": "invalid"}) == 3
    assert (await api.client.get("/healthz")).status == 200  # open routes are not throttled
    api.monotonic[0] += 45
    assert (await api.call("GET", "/api/v1/circuit", "admin"))[0] == 429
    api.monotonic[0] += 15
    assert (await api.call("GET", "/api/v1/circuit", "admin"))[0] == 200


async def test_metrics_can_ask_for_the_read_role(make_api: MakeApi) -> None:
    api = await make_api(metrics_need_read=True)
    assert (await api.client.get("/metrics")).status == 401
    assert (await api.call("GET", "/metrics", "webhook"))[0] == 403
    status, text = await api.call("GET", "/metrics", "reader")
    assert status == 200 and b"remediator_auth_failures_total" in text
    spec = await (await api.client.get("/api/v1/openapi.json")).json()
    assert spec["paths"]["/metrics"]["get"]["x-required-role"] == "read"


# -- pages are capped by bytes, never truncated ---------------------------------------------


def big_signal(n: int, size: int) -> Signal:
    return Signal(
        key=f"k{n}", source=Source.ALERTMANAGER, kind="Big", status=Status.FIRING,
        service="checkout", namespace="shop", labels={"n": str(n)},
        annotations={"description": "d" * size}, starts_at=NOW, ends_at=None, received_at=NOW,
    )  # fmt: skip


async def read_all(api: Api, path: str, limit: int) -> tuple[list[str], list[int]]:
    """Follow `next` to the end: every item's id, and each answer's size."""
    ids: list[str] = []
    sizes: list[int] = []
    cursor = ""
    while True:
        resp = await api.client.get(f"{path}?limit={limit}{cursor}", headers=bearer(TOKENS["lead"]))
        body = await resp.read()
        assert resp.status == 200
        sizes.append(len(body))
        page = orjson.loads(body)
        ids += [item["id"] for item in page["items"]]
        if page["next"] is None:
            return ids, sizes
        cursor = f"&cursor={page['next']}"


async def test_signal_pages_stop_at_the_byte_cap_and_continue_where_they_stopped(
    make_api: MakeApi,
) -> None:
    api = await make_api(response_bytes=50_000)
    await api.journal.record_signals([big_signal(n, 3_000) for n in range(120)])
    expected = [i["id"] for i in (await api.journal.list_signals(limit=1000)).items]
    ids, sizes = await read_all(api, "/api/v1/signals", 1000)
    assert ids == expected  # all of them, newest first, each once
    assert len(sizes) > 5 and max(sizes) <= 50_000 + 100  # the cap and the envelope
    ids, sizes = await read_all(api, "/api/v1/signals", 7)  # the limit still applies
    assert ids == expected and len(sizes) == 18


async def test_an_item_larger_than_the_cap_comes_alone(make_api: MakeApi) -> None:
    api = await make_api(response_bytes=1_000)
    await api.journal.record_signals(
        [big_signal(0, 10), big_signal(1, 5_000), big_signal(2, 10), big_signal(3, 10)]
    )
    resp = await api.client.get("/api/v1/signals?limit=10", headers=bearer(TOKENS["lead"]))
    first = await resp.json()
    assert [i["labels"]["n"] for i in first["items"]] == ["3", "2"]
    resp = await api.client.get(
        f"/api/v1/signals?limit=10&cursor={first['next']}", headers=bearer(TOKENS["lead"])
    )
    alone = await resp.json()
    assert [i["labels"]["n"] for i in alone["items"]] == ["1"] and alone["next"] is not None
    ids, sizes = await read_all(api, "/api/v1/signals", 10)
    assert len(ids) == len(set(ids)) == 4 and len(sizes) == 3


async def test_remediation_pages_are_capped_too(make_api: MakeApi) -> None:
    api = await make_api(response_bytes=4_000)
    for n in range(40):
        await awaiting(api.journal, f"rem_{n:02d}", seq=n + 1)
    expected = [i.id for i in (await api.journal.list_remediations(limit=1000)).items]
    ids, sizes = await read_all(api, "/api/v1/remediations", 1000)
    assert ids == expected and len(ids) == 40
    assert len(sizes) > 3 and max(sizes) <= 4_000 + 100
