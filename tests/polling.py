"""Bounded polling for tests that wait on real peers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    timeout: float = 60,
    what: str,
    interval: float = 0.2,
) -> T:
    """Poll ``probe`` until ``done`` holds; fail with the last value seen."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await probe()
        if done(value):
            return value
        if loop.time() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:.0f}s; last: {value!r}")
        await asyncio.sleep(interval)
