"""JournalLifecycle: open, alive, heartbeat, close."""

from __future__ import annotations

import pytest

from remediator.domain.errors import TemporaryError
from tests.contract.builders import Clock, signal
from tests.contract.conftest import Storage


async def test_alive_only_while_open(storage: Storage, clock: Clock) -> None:
    journal = storage.make("replica-a", clock)
    assert not journal.alive()
    await journal.open()
    try:
        assert journal.alive()
        await journal.open()  # a second open is harmless
        assert journal.alive()
    finally:
        await journal.close()
    assert not journal.alive()
    with pytest.raises(TemporaryError):
        await journal.record_signals([signal(1)])
    with pytest.raises(TemporaryError):
        await journal.check_writable()


async def test_what_was_recorded_survives_reopening(storage: Storage, clock: Clock) -> None:
    first = storage.make("replica-a", clock)
    await first.open()
    try:
        await first.record_signals([signal(1)])
    finally:
        await first.close()
    second = storage.make("replica-a", clock)
    await second.open()  # migrations already applied: nothing to do
    try:
        (again,) = await second.record_signals([signal(1)])
        assert again.duplicate
    finally:
        await second.close()
