"""Without --url the commands read the local journal file (a real SQLite journal here);
approving and resetting there is break-glass: said so, and recorded as the OS user."""

from __future__ import annotations

import asyncio
import getpass
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

from remediator.domain.lifecycle import Remediation, RemediationStatus
from remediator.domain.rules import RulePack
from remediator.domain.signals import Signal, Source, Status
from remediator.engine.decider import DecisionEngine
from remediator.journal.sqlite import SqliteJournal
from remediator.rulefiles import load_rule_pack_from_path
from tests.unit.cli.conftest import Cli
from tests.unit.engine.test_decider import (
    NOW,
    RULES,
    Clock,
    FakeFacts,
    deploy_event,
    journal_alerts,
    journal_events,
)
from tests.unit.payloads import alert

USER = f"local:{getpass.getuser()}"


@pytest.fixture
def journal_path(tmp_path: Path) -> Path:
    return tmp_path / "journal.db"


def journal_flag(path: Path) -> list[str]:
    return ["--journal", f"sqlite:///{path}"]


async def _awaiting_approval(path: Path) -> str:
    """A rollback plan whose rule requires approval, as the engine journals it."""
    pack = load_rule_pack_from_path(RULES)
    rules = tuple(
        r.model_copy(update={"require_approval": True}) if r.name == "pod-not-ready-rollback" else r
        for r in pack.rules
    )
    gated: RulePack = pack.model_copy(update={"rules": rules})
    journal = SqliteJournal(path=path)
    await journal.open()
    try:
        await journal_events(journal, [deploy_event(1, at=NOW - timedelta(days=1)),
                                       deploy_event(2, at=NOW - timedelta(minutes=8))])  # fmt: skip
        await journal_alerts(journal, [alert(name="PodNotReady", fingerprint="gate",
                                             starts_at=(NOW - timedelta(minutes=5)).isoformat())])  # fmt: skip
        await DecisionEngine(journal=journal, pack=gated, facts=FakeFacts({}), dry_run=False,
                             clock=Clock(NOW)).run_once()  # fmt: skip
        [item] = (await journal.list_remediations(status=RemediationStatus.AWAITING_APPROVAL)).items
        return item.id
    finally:
        await journal.close()


async def _read(path: Path, remediation_id: str) -> Remediation:
    journal = SqliteJournal(path=path)
    await journal.open()
    try:
        item = await journal.get_remediation(remediation_id)
        assert item is not None
        return item
    finally:
        await journal.close()


def test_approving_in_the_journal_file_is_break_glass_as_the_os_user(
    cli: Cli, journal_path: Path
) -> None:
    rid = asyncio.run(_awaiting_approval(journal_path))
    code, out, err = cli("approve", rid, *journal_flag(journal_path))
    assert code == 0
    assert "break-glass" in err and f"Recorded as who did it: {USER}, the local OS user" in err
    assert out.startswith(f"{rid} approved by {USER}: rollback on checkout will run")
    item = asyncio.run(_read(journal_path, rid))
    assert item.status is RemediationStatus.PLANNED and item.approved_by == USER

    code, _, err = cli("approve", rid, *journal_flag(journal_path))
    assert code == 1
    assert err.splitlines()[-1] == f"remediator: {rid} is planned, not awaiting approval"


def test_by_is_recorded_next_to_the_os_user(cli: Cli, journal_path: Path) -> None:
    rid = asyncio.run(_awaiting_approval(journal_path))
    code, _, _ = cli("approve", rid, "--by", "alice", *journal_flag(journal_path))
    assert code == 0
    assert asyncio.run(_read(journal_path, rid)).approved_by == f"alice ({USER})"


@pytest.mark.parametrize("by", ["", "  ", "al\nice", "x" * 201])
def test_a_bad_by_is_refused_before_the_journal(by: str, cli: Cli, journal_path: Path) -> None:
    code, _, err = cli("approve", "rem_1", "--by", by, *journal_flag(journal_path))
    assert code == 2 and "--by: a name of 1 to 200 characters" in err
    assert not journal_path.exists()


def test_resetting_the_breaker_in_the_journal_file_records_the_os_user(
    cli: Cli, journal_path: Path
) -> None:
    async def trip() -> None:
        journal = SqliteJournal(path=journal_path)
        await journal.open()
        await journal.set_circuit(open=True, reason="5 failed remediations in a row", at=NOW)
        await journal.close()

    asyncio.run(trip())
    code, out, _ = cli("circuit", "status", *journal_flag(journal_path))
    assert (code, out.splitlines()[:2]) == (
        0, ["circuit breaker OPEN: rules only notify", "reason: 5 failed remediations in a row"]
    )  # fmt: skip

    code, out, err = cli("circuit", "reset", *journal_flag(journal_path))
    assert code == 0 and "break-glass" in err and USER in err
    assert out.splitlines()[:2] == [
        "circuit breaker closed",
        f"reason: reset by {USER} from the journal file (break-glass)",
    ]
    assert out.splitlines()[-1] == f"by: {USER}"  # the journal records who, as the API does


def test_reading_lists_pages_past_one_journal_page(cli: Cli, journal_path: Path) -> None:
    async def fill() -> None:
        journal = SqliteJournal(path=journal_path)
        await journal.open()
        await journal.record_signals([
            Signal(key=f"k{n}", source=Source.MANUAL, kind="test", status=Status.EVENT,
                   service="checkout", namespace="shop", labels={}, annotations={},
                   starts_at=NOW, ends_at=None, received_at=NOW)
            for n in range(1200)
        ])  # fmt: skip
        await journal.close()

    asyncio.run(fill())
    code, out, _ = cli("signals", "--limit", "1100", "--json", *journal_flag(journal_path))
    assert code == 0
    ids = [orjson.loads(line)["id"] for line in out.splitlines()]
    assert len(ids) == len(set(ids)) == 1100


def test_report_and_unknown_ids_from_the_journal(cli: Cli, journal_path: Path) -> None:
    rid = asyncio.run(_awaiting_approval(journal_path))
    code, out, _ = cli("report", rid, *journal_flag(journal_path))
    assert code == 0 and out.startswith("# Rollback record") and "checkout" in out
    code, out, err = cli("remediations", "rem_nope", *journal_flag(journal_path))
    assert (code, out) == (1, "")
    assert err == "remediator: no remediation 'rem_nope'\n"


def rules_with_owner(tmp_path: Path) -> Path:
    """The shipped rule files, the catalog naming checkout's owner."""
    rules = tmp_path / "rules"
    rules.mkdir()
    for shipped in RULES.glob("*.yaml"):
        text = shipped.read_text()
        if shipped.name == "catalog.yaml":
            assert "    # owner: team-checkout" in text
            text = text.replace("    # owner: team-checkout", "    owner: team-checkout")
        (rules / shipped.name).write_text(text)
    return rules


def test_the_report_from_the_journal_shows_owner_and_analysis_as_the_api_does(
    cli: Cli, journal_path: Path, tmp_path: Path
) -> None:
    rid = asyncio.run(_awaiting_approval(journal_path))

    async def analyse() -> None:
        journal = SqliteJournal(path=journal_path)
        await journal.open()
        try:
            await journal.edit_record_analysis(
                rid, changes={"root_cause": "pool size 1 in v1.4.1",
                              "lessons": ("roll back first",)},
                by="alice", at=NOW + timedelta(hours=1),
            )  # fmt: skip
        finally:
            await journal.close()

    asyncio.run(analyse())
    rules = str(rules_with_owner(tmp_path))
    code, out, err = cli("report", rid, "--format", "json", "--rules", rules,
                         *journal_flag(journal_path))  # fmt: skip
    assert (code, err) == (0, "")
    record = orjson.loads(out)
    assert record["owner"] == "team-checkout"
    assert (record["root_cause"], record["lessons"]) == (
        "pool size 1 in v1.4.1",
        ["roll back first"],
    )
    assert record["analysis_edited_by"] == "alice"
    assert record["analysis_edited_at"].startswith(
        (NOW + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    )
    code, out, _ = cli("report", rid, "--rules", rules, *journal_flag(journal_path))
    assert code == 0
    assert "team-checkout" in out and "pool size 1 in v1.4.1" in out and "alice" in out


def test_a_report_whose_catalog_cannot_be_read_still_prints_and_says_so(
    cli: Cli, journal_path: Path, tmp_path: Path
) -> None:
    rid = asyncio.run(_awaiting_approval(journal_path))
    missing = tmp_path / "no-rules"
    code, out, err = cli("report", rid, "--format", "json", "--rules", str(missing),
                         *journal_flag(journal_path))  # fmt: skip
    assert code == 0
    assert orjson.loads(out)["owner"] is None
    assert err == (
        f"remediator: the record's owner is not shown: {missing}: no such rule file or "
        "directory (give --rules)\n"
    )


def test_a_journal_that_cannot_be_opened_is_one_line(cli: Cli, tmp_path: Path) -> None:
    code, out, err = cli("signals", "--journal", f"sqlite:///{tmp_path}")  # a directory
    assert (code, out) == (1, "")
    assert err.startswith(f"remediator: journal {tmp_path}") and err.count("\n") == 1


def test_the_status_filter_is_one_of_the_lifecycle_statuses(cli: Cli, journal_path: Path) -> None:
    rid = asyncio.run(_awaiting_approval(journal_path))
    code, out, _ = cli(
        "remediations", "--status", "awaiting_approval", "--json", *journal_flag(journal_path)
    )
    assert code == 0
    assert [orjson.loads(line)["id"] for line in out.splitlines()] == [rid]
    code, out, _ = cli("remediations", "--status", "planned", "--json", *journal_flag(journal_path))
    assert (code, out) == (0, "")
    code, out, err = cli("remediations", "--status", "done", *journal_flag(journal_path))
    assert (code, out) == (2, "")
    assert err.startswith("remediator: --status: one of planned, awaiting_approval, dry-run,")


def test_cancelling_in_the_journal_file_is_break_glass_and_requests_need_the_api(
    cli: Cli, journal_path: Path
) -> None:
    rid = asyncio.run(_awaiting_approval(journal_path))
    code, out, _ = cli("requests", *journal_flag(journal_path))
    assert code == 0 and rid in out and "(alert)" in out
    code, _, err = cli("reject", rid, *journal_flag(journal_path))
    assert code == 2 and err.endswith("reject goes through the daemon's API only (give --url)\n")
    code, _, err = cli("request", "checkout", "--scenario", "user_experience", "--reason", "x",
                       *journal_flag(journal_path))  # fmt: skip
    assert code == 2 and "rollback requests go through the daemon's API" in err
    code, out, err = cli("cancel", rid, *journal_flag(journal_path))
    assert code == 0 and "break-glass" in err
    assert out.startswith(f"{rid}: cancelled (cancelled by {USER}: break-glass")
    assert asyncio.run(_read(journal_path, rid)).status is RemediationStatus.CANCELLED
