"""The operator commands over the daemon's API (a scripted stand-in on a real port):
what they send, how they page, and the one line each refusal ends with."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.unit.cli.conftest import TOKEN, Cli
from tests.unit.cli.fakeapi import FakeApi, Reply, Seen, json_reply, running


def signal(n: int) -> dict[str, Any]:
    return {
        "id": f"sig_{n:04d}",
        "received_at": f"2026-01-01T00:00:{n % 60:02d}.000000Z",
        "source": "alertmanager",
        "status": "firing",
        "service": "checkout",
        "namespace": "shop",
        "kind": "HighErrorRate",
    }


REMEDIATION = {
    "id": "rem_0123abcd",
    "created_at": "2026-01-01T00:00:00.000000Z",
    "status": "awaiting_approval",
    "service": "checkout",
    "action": "rollout_undo",
    "reason": None,
    "rule": "manual-rollback",
    "signal_id": "sig_0001",
    "explanation": "plan: rollout_undo checkout to revision 3",
    "claimed_at": None,
    "claimed_by": None,
    "finished_at": None,
    "approved_by": None,
    "steps": [],
}


def url_args(api: FakeApi, token_file: Path) -> list[str]:
    return ["--url", api.url, "--token-file", str(token_file)]


def one_line(err: str) -> str:
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err.strip()


def test_signals_sends_the_token_from_the_file_and_prints_the_table(
    cli: Cli, api: FakeApi, token_file: Path
) -> None:
    api.respond = lambda seen: json_reply(200, {"items": [signal(1)], "next": None})
    code, out, err = cli("signals", "--service", "checkout", *url_args(api, token_file))
    assert (code, err) == (0, "")
    [seen] = api.seen
    assert (seen.method, seen.path) == ("GET", "/api/v1/signals")
    assert seen.query == {"service": "checkout", "limit": "20"}
    assert seen.headers["authorization"] == f"Bearer {TOKEN}"  # the file's newline stripped
    assert out.splitlines()[0].startswith("RECEIVED")
    assert "checkout" in out and "HighErrorRate" in out
    assert TOKEN not in out


def test_url_and_token_can_come_from_the_environment(
    cli: Cli, api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.respond = lambda seen: json_reply(200, {"open": False, "reason": None, "changed_at": None})
    monkeypatch.setenv("REMEDIATOR_URL", api.url + "/")
    monkeypatch.setenv("REMEDIATOR_TOKEN", TOKEN)
    code, out, _ = cli("circuit", "status")
    assert code == 0 and out == "circuit breaker closed\n"
    [seen] = api.seen
    assert seen.path == "/api/v1/circuit"
    assert seen.headers["authorization"] == f"Bearer {TOKEN}"


def test_a_token_file_named_in_the_environment_beats_the_token_variable(
    cli: Cli, api: FakeApi, token_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api.respond = lambda seen: json_reply(200, {"items": [], "next": None})
    monkeypatch.setenv("REMEDIATOR_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("REMEDIATOR_TOKEN", "another-token")
    assert cli("signals", "--url", api.url)[0] == 0
    assert api.seen[0].headers["authorization"] == f"Bearer {TOKEN}"


def test_a_journal_flag_beats_the_url_in_the_environment(
    cli: Cli, api: FakeApi, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("REMEDIATOR_URL", api.url)
    code, out, _ = cli("signals", "--journal", f"sqlite:///{tmp_path / 'j.db'}")
    assert (code, out) == (0, "no signals journaled\n")
    assert api.seen == []


def paged(total: int, *, page_cap: int = 1000) -> Any:
    """A server holding ``total`` signals, answering at most ``page_cap`` a page."""

    def respond(seen: Seen) -> Reply:
        start = int(seen.query.get("cursor", "0"))
        end = min(start + int(seen.query["limit"]), start + page_cap, total)
        following = str(end) if end < total else None
        return json_reply(200, {"items": [signal(n) for n in range(start, end)], "next": following})

    return respond


def test_a_limit_above_one_page_follows_the_next_cursors(
    cli: Cli, api: FakeApi, token_file: Path
) -> None:
    api.respond = paged(5000)
    code, out, _ = cli("signals", "--limit", "2500", "--json", *url_args(api, token_file))
    assert code == 0
    ids = [orjson.loads(line)["id"] for line in out.splitlines()]
    assert ids == [f"sig_{n:04d}" for n in range(2500)]
    assert [(s.query["limit"], s.query.get("cursor")) for s in api.seen] == [
        ("1000", None), ("1000", "1000"), ("500", "2000"),
    ]  # fmt: skip


def test_pages_cut_short_by_the_server_are_followed_until_the_limit(
    cli: Cli, api: FakeApi, token_file: Path
) -> None:
    api.respond = paged(5000, page_cap=300)  # e.g. the server's bytes-per-response cap
    code, out, _ = cli("signals", "--limit", "1000", "--json", *url_args(api, token_file))
    assert code == 0 and len(out.splitlines()) == 1000
    assert [s.query["limit"] for s in api.seen] == ["1000", "700", "400", "100"]


def test_paging_stops_at_the_last_page(cli: Cli, api: FakeApi, token_file: Path) -> None:
    api.respond = paged(1500)
    code, out, _ = cli("signals", "--limit", "9000", "--json", *url_args(api, token_file))
    assert code == 0 and len(out.splitlines()) == 1500
    assert len(api.seen) == 2


def test_an_empty_page_with_a_cursor_ends_paging(cli: Cli, api: FakeApi, token_file: Path) -> None:
    api.respond = lambda seen: json_reply(200, {"items": [], "next": "12"})
    code, out, _ = cli("signals", "--limit", "5000", *url_args(api, token_file))
    assert (code, out) == (0, "no signals journaled\n")
    assert len(api.seen) == 1


def test_remediations_pass_their_filters(cli: Cli, api: FakeApi, token_file: Path) -> None:
    listed = {k: REMEDIATION[k] for k in ("id", "created_at", "status", "service", "action")}
    api.respond = lambda seen: json_reply(
        200, {"items": [{**listed, "reason": None}], "next": None}
    )
    code, out, _ = cli(
        "remediations", "--service", "checkout", "--status", "awaiting_approval",
        *url_args(api, token_file),
    )  # fmt: skip
    assert code == 0 and "rem_0123abcd" in out
    assert api.seen[0].query == {
        "service": "checkout",
        "status": "awaiting_approval",
        "limit": "20",
    }


def test_one_remediation_and_its_history(cli: Cli, api: FakeApi, token_file: Path) -> None:
    step = {
        "kind": "rollout_undo",
        "status": "succeeded",
        "started_at": "2026-01-01T00:01:00Z",
        "finished_at": "2026-01-01T00:01:05Z",
        "detail": {"summary": "back to revision 3"},
    }
    full = {**REMEDIATION, "status": "succeeded", "approved_by": "alice", "steps": [step]}

    def respond(seen: Seen) -> Reply:
        if seen.path == "/api/v1/remediations":
            return json_reply(200, {"items": [full], "next": None})
        return json_reply(200, full)

    api.respond = respond
    code, out, _ = cli("history", "--service", "checkout", *url_args(api, token_file))
    assert code == 0
    assert [s.path for s in api.seen] == [
        "/api/v1/remediations", "/api/v1/remediations/rem_0123abcd",
    ]  # fmt: skip
    assert "approved by alice" in out and "back to revision 3" in out

    code, out, _ = cli("remediations", "rem_0123abcd", *url_args(api, token_file))
    assert code == 0 and "plan: rollout_undo checkout to revision 3" in out


def test_report_asks_for_the_record_in_the_format(cli: Cli, api: FakeApi, token_file: Path) -> None:
    api.respond = lambda seen: (200, {"Content-Type": "text/html"}, b"<html>record</html>")
    code, out, _ = cli("report", "rem_0123abcd", "--format", "html", *url_args(api, token_file))
    assert (code, out) == (0, "<html>record</html>\n")
    assert api.seen[0].path == "/api/v1/remediations/rem_0123abcd/record"
    assert api.seen[0].query == {"format": "html"}


def test_an_id_is_one_path_segment(cli: Cli, api: FakeApi, token_file: Path) -> None:
    api.respond = lambda seen: json_reply(404, {"error": "id: no remediation"})
    cli("remediations", "../circuit/reset", *url_args(api, token_file))
    assert api.seen[0].path == "/api/v1/remediations/..%2Fcircuit%2Freset"


@pytest.mark.parametrize("comment", [None, "checked with the checkout team"])
def test_approve_sends_only_the_comment_never_who(
    comment: str | None, cli: Cli, api: FakeApi, token_file: Path
) -> None:
    api.respond = lambda seen: json_reply(
        200, {**REMEDIATION, "status": "planned", "approved_by": "alice"}
    )
    extra = [] if comment is None else ["--comment", comment]
    code, out, err = cli("approve", "rem_0123abcd", *extra, *url_args(api, token_file))
    assert (code, err) == (0, "")
    [seen] = api.seen
    assert (seen.method, seen.path) == ("POST", "/api/v1/remediations/rem_0123abcd/approve")
    assert seen.headers["content-type"] == "application/json"
    assert orjson.loads(seen.body) == ({} if comment is None else {"comment": comment})
    assert out == "rem_0123abcd approved by alice: rollout_undo on checkout will run\n"


def test_circuit_reset_posts_and_shows_the_breaker(
    cli: Cli, api: FakeApi, token_file: Path
) -> None:
    api.respond = lambda seen: json_reply(
        200, {"open": False, "reason": None, "changed_at": "2026-01-01T00:00:00+00:00"}
    )
    code, out, err = cli("circuit", "reset", *url_args(api, token_file))
    assert code == 0 and "break-glass" not in err
    assert [(s.method, s.path) for s in api.seen] == [("POST", "/api/v1/circuit/reset")]
    assert out == "circuit breaker closed\nsince: 2026-01-01T00:00:00+00:00\n"


# -- refusals -----------------------------------------------------------------------------


def test_a_refused_token_is_exit_2_with_one_line_and_no_token(
    cli: Cli, api: FakeApi, token_file: Path
) -> None:
    api.respond = lambda seen: json_reply(
        401, {"error": "missing or wrong credentials"}, {"WWW-Authenticate": "Bearer"}
    )
    code, out, err = cli("signals", *url_args(api, token_file))
    assert code == 2 and out == ""
    assert one_line(err) == (
        "remediator: unauthorized: missing or wrong credentials; the credential given was refused"
    )
    assert TOKEN not in err


def test_no_credential_at_all_says_where_to_put_one(cli: Cli, api: FakeApi) -> None:
    api.respond = lambda seen: json_reply(401, {"error": "missing or wrong credentials"})
    code, _, err = cli("signals", "--url", api.url)
    assert code == 2
    assert "authorization" not in api.seen[0].headers
    assert "no credential was given (--token-file" in one_line(err)


@pytest.mark.parametrize(
    "argv",
    [["approve", "rem_0123abcd"], ["circuit", "reset"]],
)
def test_a_missing_role_prints_the_servers_reason(
    argv: list[str], cli: Cli, api: FakeApi, token_file: Path
) -> None:
    api.respond = lambda seen: json_reply(
        403, {"error": "forbidden: role 'operate' required for POST /api/v1/circuit/reset"}
    )
    code, out, err = cli(*argv, *url_args(api, token_file))
    assert code == 2 and out == ""
    line = one_line(err)
    assert line.startswith("remediator: forbidden: ")
    assert "role 'operate' required" in line


@pytest.mark.parametrize(
    ("reply", "code", "fragment"),
    [
        (json_reply(503, {"error": "draining"}, {"Retry-After": "7"}), 3,
         "daemon unavailable: draining (retry after 7s)"),
        (json_reply(500, {"error": "internal error 0a1b2c: see the server log"}), 3,
         "daemon error 500: internal error 0a1b2c"),
        ((502, {"Content-Type": "text/html"}, b"<html>bad gateway</html>"), 3,
         "daemon error 502: HTTP 502"),
        (json_reply(404, {"error": "id: no remediation 'rem_x'"}), 1,
         "remediator: id: no remediation 'rem_x'"),
        (json_reply(409, {"error": "id: rem_x is planned, not awaiting approval"}), 1,
         "not awaiting approval"),
        (json_reply(400, {"error": "status: must be one of planned, ..."}), 2,
         "400: status: must be one of"),
        (json_reply(429, {"error": "too many failed logins"}, {"Retry-After": "30"}), 2,
         "too many requests: too many failed logins (retry after 30s)"),
        (json_reply(200, ["not", "an", "object"]), 1, "other than a JSON object"),
        ((200, {"Content-Type": "text/plain"}, b"hello"), 3, "is --url the remediator daemon?"),
    ],
)  # fmt: skip
def test_each_answer_maps_to_one_line_and_an_exit_code(
    reply: Reply, code: int, fragment: str, cli: Cli, api: FakeApi, token_file: Path
) -> None:
    api.respond = lambda seen: reply
    got, out, err = cli("circuit", "status", *url_args(api, token_file))
    assert got == code and out == ""
    assert fragment in one_line(err)


def test_a_server_echoing_the_token_does_not_get_it_printed(
    cli: Cli, api: FakeApi, token_file: Path
) -> None:
    api.respond = lambda seen: json_reply(
        400, {"error": f"bad header {seen.headers['authorization']}\nsecond line"}
    )
    code, _, err = cli("signals", *url_args(api, token_file))
    assert code == 2
    assert TOKEN not in err
    assert "Bearer ***" in one_line(err)


def test_a_long_error_is_cut_to_one_bounded_line(cli: Cli, api: FakeApi, token_file: Path) -> None:
    api.respond = lambda seen: json_reply(400, {"error": "x\r\n" * 10_000})
    _, _, err = cli("signals", *url_args(api, token_file))
    assert len(one_line(err)) < 600


def test_a_redirect_is_not_followed_with_the_credential(
    cli: Cli, api: FakeApi, token_file: Path
) -> None:
    with running() as elsewhere:
        api.respond = lambda seen: (307, {"Location": elsewhere.url + seen.path}, b"")
        code, _, err = cli("signals", *url_args(api, token_file))
        assert elsewhere.seen == []
    assert code == 2
    assert "redirected (307)" in one_line(err) and elsewhere.url in err


def test_nothing_listening_is_unavailable(cli: Cli, token_file: Path) -> None:
    with running() as gone:
        url = gone.url
    code, _, err = cli("signals", "--url", url, "--token-file", str(token_file))
    assert code == 3
    assert one_line(err).startswith(f"remediator: cannot reach {url}")


def test_no_answer_within_the_timeout_is_unavailable(
    cli: Cli, api: FakeApi, token_file: Path
) -> None:
    release = threading.Event()

    def stall(seen: Seen) -> Reply:
        release.wait(timeout=30)
        return json_reply(200, {"items": [], "next": None})

    api.respond = stall
    try:
        code, _, err = cli("signals", "--timeout", "0.2", *url_args(api, token_file))
    finally:
        release.set()
    assert code == 3
    assert "did not answer within 0.2s" in one_line(err)


# -- rollback requests and approvals -------------------------------------------------------

WAITING = {
    **REMEDIATION,
    "rule": "manual-severe-functional-defect",
    "approval": {
        "requester": "rita", "emergency": False, "required": ["product-manager", "tech-lead"],
        "missing": ["tech-lead"], "response_due_at": "2026-01-01T00:30:00.000000Z",
        "expires_at": "2026-01-01T02:00:00.000000Z",
    },
}  # fmt: skip


def test_request_sends_the_fields_and_the_idempotency_key_never_who(
    cli: Cli, api: FakeApi, token_file: Path
) -> None:
    api.respond = lambda seen: json_reply(201, {**WAITING, "action": "rollback"})
    code, out, err = cli(
        "request", "checkout", "--scenario", "severe_functional_defect", "--reason",
        "card payments fail", "--target", "41", "--idempotency-key", "k-1",
        *url_args(api, token_file),
    )  # fmt: skip
    assert (code, err) == (0, "")
    [seen] = api.seen
    assert (seen.method, seen.path) == ("POST", "/api/v1/rollback-requests")
    assert seen.headers["idempotency-key"] == "k-1"
    assert orjson.loads(seen.body) == {
        "service": "checkout", "scenario": "severe_functional_defect",
        "reason": "card payments fail", "target": "41", "emergency": False,
    }  # fmt: skip
    assert out == (
        "rem_0123abcd: rollback of checkout awaiting_approval; needs product-manager + "
        "tech-lead, respond by 2026-01-01T00:30:00.000000Z, expires 2026-01-01T02:00:00.000000Z\n"
    )


def test_a_request_the_rules_skip_exits_1_with_the_reason(
    cli: Cli, api: FakeApi, token_file: Path
) -> None:
    api.respond = lambda seen: json_reply(
        201, {**REMEDIATION, "status": "skipped", "reason": "in_progress"}
    )
    code, _, err = cli("request", "checkout", "--scenario", "user_experience", "--reason", "x",
                       *url_args(api, token_file))  # fmt: skip
    assert code == 1 and err == "not waiting for approval: in_progress\n"


def test_a_request_not_decided_yet_says_where_to_look(
    cli: Cli, api: FakeApi, token_file: Path
) -> None:
    api.respond = lambda seen: json_reply(202, {"id": "rem_1", "signal_id": "s", "status": None})
    code, out, _ = cli("request", "checkout", "--scenario", "user_experience", "--reason", "x",
                       *url_args(api, token_file))  # fmt: skip
    assert code == 0 and "rem_1: requested; not decided yet" in out


@pytest.mark.parametrize("verb", ["reject", "cancel", "review"])
def test_reject_cancel_and_review_post_only_the_comment(
    verb: str, cli: Cli, api: FakeApi, token_file: Path
) -> None:
    api.respond = lambda seen: json_reply(200, {**WAITING, "status": "rejected", "reason": "no"})
    code, _, err = cli(verb, "rem_0123abcd", "--comment", "why", *url_args(api, token_file))
    assert (code, err) == (0, "")
    [seen] = api.seen
    assert (seen.method, seen.path) == ("POST", f"/api/v1/remediations/rem_0123abcd/{verb}")
    assert orjson.loads(seen.body) == {"comment": "why"}


def test_an_approval_still_missing_roles_says_which(
    cli: Cli, api: FakeApi, token_file: Path
) -> None:
    api.respond = lambda seen: json_reply(200, WAITING)
    code, out, _ = cli("approve", "rem_0123abcd", *url_args(api, token_file))
    assert code == 0
    assert out == "rem_0123abcd: your approval is recorded; still needed: tech-lead\n"


def test_requests_lists_what_waits_with_what_is_missing(
    cli: Cli, api: FakeApi, token_file: Path
) -> None:
    def respond(seen: Seen) -> Reply:
        if seen.path == "/api/v1/remediations":
            return json_reply(200, {"items": [REMEDIATION], "next": None})
        return json_reply(200, WAITING)

    api.respond = respond
    code, out, err = cli("requests", *url_args(api, token_file))
    assert (code, err) == (0, "")
    assert api.seen[0].query["status"] == "awaiting_approval"
    header, row = out.splitlines()
    assert header.split()[:3] == ["ID", "SERVICE", "REQUESTED"]
    assert row.split() == ["rem_0123abcd", "checkout", "rita", "tech-lead",
                           "2026-01-01T00:30:00.000000Z"]  # fmt: skip
