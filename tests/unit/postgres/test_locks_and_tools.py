from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from remediator.connectors.postgres.errors import RevertBusy
from remediator.connectors.postgres.runner import ServiceLocks
from remediator.connectors.postgres.tools import find_bindir, run_tool
from remediator.domain.errors import ConfigError, PermanentError, TemporaryError


async def test_a_second_holder_is_refused_at_once_or_after_waiting() -> None:
    locks = ServiceLocks()
    async with locks.hold("checkout", wait_s=0, purpose="revert to 002"):
        assert locks.busy("checkout") == "revert to 002"
        with pytest.raises(RevertBusy, match="checkout: revert to 002 is running"):
            async with locks.hold("checkout", wait_s=0, purpose="other"):
                pass
        with pytest.raises(RevertBusy, match=r"still running after waiting 0\.05s"):
            async with locks.hold("checkout", wait_s=0.05, purpose="other"):
                pass
        async with locks.hold("payments", wait_s=0, purpose="independent"):
            pass
    assert locks.busy("checkout") is None


async def test_a_waiting_holder_gets_the_lock_when_it_is_released() -> None:
    locks = ServiceLocks()
    order: list[str] = []

    async def hold(name: str, wait: float) -> None:
        async with locks.hold("checkout", wait_s=wait, purpose=name):
            order.append(name)
            await asyncio.sleep(0.02)

    await asyncio.gather(hold("first", 0), hold("second", 5))
    assert order == ["first", "second"]


def test_find_bindir_prefers_the_servers_major(tmp_path: Path) -> None:
    for major in ("13", "15", "16"):
        (tmp_path / major / "bin").mkdir(parents=True)
        (tmp_path / major / "bin" / "pg_dump").write_text("")
    assert find_bindir(server_major=15, root=tmp_path) == tmp_path / "15" / "bin"
    assert find_bindir(server_major=14, root=tmp_path) == tmp_path / "16" / "bin"
    with pytest.raises(ConfigError, match="install postgresql-client-17"):
        find_bindir(server_major=17, root=tmp_path)


async def test_run_tool_scrubs_output_and_classifies_failures() -> None:
    script = "import sys; sys.stderr.write(sys.argv[1] + ' pw-123 ' + sys.argv[2]); sys.exit(1)"
    with pytest.raises(PermanentError) as caught:
        await run_tool(
            [sys.executable, "-c", script, "syntax error", ""],
            env={},
            what="tool",
            secret="pw-123",
            timeout_s=30,
        )
    assert "pw-123" not in str(caught.value) and "syntax error ***" in str(caught.value)
    with pytest.raises(TemporaryError, match="too many connections"):
        await run_tool(
            [sys.executable, "-c", script, "FATAL: too many connections", ""],
            env={},
            what="tool",
            secret=None,
            timeout_s=30,
        )
    with pytest.raises(TemporaryError, match="no result after"):
        await run_tool(
            [sys.executable, "-c", "import time; time.sleep(30)"],
            env={},
            what="tool",
            secret=None,
            timeout_s=0.5,
        )
    with pytest.raises(ConfigError, match="not found"):
        await run_tool(["/nonexistent/pg_dump"], env={}, what="tool", secret=None, timeout_s=1)
