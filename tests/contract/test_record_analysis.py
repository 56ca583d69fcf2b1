"""RemediationStore: the analysis people write into a rollback record, every edit kept."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from remediator.domain.lifecycle import RemediationStatus
from remediator.ports import Journal
from tests.contract.builders import NOW, plant

LATER = NOW + timedelta(minutes=5)


async def test_an_edit_keeps_its_editor_and_time_and_leaves_other_fields(
    journal: Journal,
) -> None:
    rid = await plant(journal, status=RemediationStatus.PLANNED)
    assert await journal.record_analysis(rid) is None

    first = await journal.edit_record_analysis(
        rid, changes={"root_cause": "pool size 1 in v1.4.1", "lessons": ("roll back first",)},
        by="alice", at=NOW,
    )  # fmt: skip
    assert first is not None
    second = await journal.edit_record_analysis(
        rid, changes={"improvements": ("canary checks the pool", "alert on waits")},
        by="bob", at=LATER,
    )  # fmt: skip
    assert second is not None

    stored = await journal.record_analysis(rid)
    assert stored == second
    assert stored.root_cause == "pool size 1 in v1.4.1"  # kept from alice's edit
    assert stored.lessons == ("roll back first",)
    assert stored.improvements == ("canary checks the pool", "alert on waits")
    assert (stored.edited_by, stored.edited_at) == ("bob", LATER)


async def test_a_list_given_empty_clears_it(journal: Journal) -> None:
    rid = await plant(journal, status=RemediationStatus.PLANNED)
    await journal.edit_record_analysis(rid, changes={"lessons": ("a", "b")}, by="a", at=NOW)
    cleared = await journal.edit_record_analysis(rid, changes={"lessons": ()}, by="a", at=LATER)
    assert cleared is not None and cleared.lessons == ()


async def test_no_such_remediation_writes_nothing(journal: Journal) -> None:
    assert (
        await journal.edit_record_analysis(
            "rem_missing", changes={"root_cause": "x"}, by="a", at=NOW
        )
        is None
    )
    assert await journal.record_analysis("rem_missing") is None


async def test_concurrent_edits_of_different_fields_both_survive(journal: Journal) -> None:
    rid = await plant(journal, status=RemediationStatus.PLANNED)
    await asyncio.gather(
        journal.edit_record_analysis(rid, changes={"root_cause": "c"}, by="a", at=NOW),
        journal.edit_record_analysis(rid, changes={"lessons": ("l",)}, by="b", at=NOW),
    )
    stored = await journal.record_analysis(rid)
    assert stored is not None and (stored.root_cause, stored.lessons) == ("c", ("l",))
