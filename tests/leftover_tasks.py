from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest


@pytest.fixture(autouse=True)
async def no_leftover_tasks() -> AsyncIterator[None]:
    """Every tier: a test that leaves a task running has leaked work; fail it."""
    yield
    current = asyncio.current_task()
    # Give tasks cancelled during teardown one turn of the loop to finish.
    await asyncio.sleep(0)
    leftover = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    assert not leftover, f"tasks left running: {leftover}"
