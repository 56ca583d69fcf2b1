from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.daemon import Daemon


@pytest.fixture
def daemon(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Daemon]:
    d = Daemon(tmp_path / "daemon")
    d.start()
    yield d
    if d.proc is not None:
        code = d.stop()
        assert code == 0, f"daemon exited {code} on SIGTERM"
    if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
        print(d.log_path.read_text()[-5000:])


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
