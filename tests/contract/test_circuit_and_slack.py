"""CircuitStore and SlackThreads."""

from __future__ import annotations

from datetime import timedelta

from remediator.domain.notices import SlackMessageRef
from remediator.ports import CircuitRecord, Journal
from tests.contract.builders import NOW


async def test_the_circuit_starts_closed_and_keeps_who_changed_it(journal: Journal) -> None:
    assert await journal.circuit() == CircuitRecord(open=False, reason=None, changed_at=None)
    await journal.set_circuit(open=True, reason="3 failures in a row", at=NOW)
    assert await journal.circuit() == CircuitRecord(
        open=True, reason="3 failures in a row", changed_at=NOW, changed_by=None
    )
    later = NOW + timedelta(minutes=30)
    await journal.set_circuit(open=False, reason="checked", at=later, by="alice")
    assert await journal.circuit() == CircuitRecord(
        open=False, reason="checked", changed_at=later, changed_by="alice"
    )


async def test_a_slack_ref_is_saved_and_replaced(journal: Journal) -> None:
    assert await journal.slack_ref("rem_1") is None
    await journal.save_slack_ref("rem_1", SlackMessageRef(channel="C1", ts="1.0"))
    await journal.save_slack_ref("rem_2", SlackMessageRef(channel="C2", ts="2.0"))
    await journal.save_slack_ref("rem_1", SlackMessageRef(channel="C1", ts="1.5"))
    assert await journal.slack_ref("rem_1") == SlackMessageRef(channel="C1", ts="1.5")
    assert await journal.slack_ref("rem_2") == SlackMessageRef(channel="C2", ts="2.0")
