"""pytest fixtures for the real peers: ``kafka``, ``kube``, ``helm``, ``postgres``,
``prometheus``, ``alertmanager``, ``smtp_server``, ``slack_api``.

One session-wide :class:`TestEnv` starts only the peers a test asks for, on first use,
on free loopback ports, and stops them all at session end. Each fixture yields the
started peer; its endpoints are at ``.endpoints``. Logs are kept under
``var/testenv/pytest/<run>/<peer>/`` (``latest`` links the newest) and the tail of the relevant ones is attached to a
failing test's report.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from tests.env.base import Peer, pid_alive
from tests.env.session import VAR_DIR, TestEnv

# fixture name -> peer name
FIXTURES = {
    "kafka": "kafka",
    "kube": "kube",
    "helm": "helm",
    "postgres": "postgres",
    "prometheus": "prometheus",
    "alertmanager": "alertmanager",
    "smtp_server": "smtp",
    "slack_api": "slack",
}

_ENV_KEY = pytest.StashKey[TestEnv]()
KEEP_RUNS = 3  # old work dirs kept for their logs


def _workdir() -> Path:
    """A fresh work dir per pytest process: concurrent sessions never share data dirs.

    ``var/testenv/pytest/latest`` points at the newest; old ones are pruned (keeping a
    few for their logs) once their pytest process is gone.
    """
    base = VAR_DIR / "pytest"
    base.mkdir(parents=True, exist_ok=True)
    runs = sorted(
        (d for d in base.iterdir() if d.is_dir() and not d.is_symlink() and "-" in d.name),
        key=lambda d: d.name,
    )
    for old in runs[:-KEEP_RUNS]:
        pid = old.name.rsplit("-", 1)[-1]
        if not (pid.isdigit() and pid_alive(int(pid))):
            shutil.rmtree(old, ignore_errors=True)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    workdir = base / f"{time.strftime('%Y%m%dT%H%M%S')}{worker and '-' + worker}-{os.getpid()}"
    workdir.mkdir()
    latest = base / "latest"
    with contextlib.suppress(OSError):
        latest.unlink(missing_ok=True)
        latest.symlink_to(workdir.name)
    return workdir


@pytest.fixture(scope="session")
def testenv(request: pytest.FixtureRequest) -> Iterator[TestEnv]:
    """The session's environment; prefer the per-peer fixtures."""
    env = TestEnv(_workdir())
    request.config.stash[_ENV_KEY] = env
    try:
        yield env
    finally:
        env.stop()


def _peer_fixture(peer_name: str) -> Callable[[TestEnv], Peer]:
    def fixture(testenv: TestEnv) -> Peer:
        return testenv.get(peer_name)

    fixture.__doc__ = f"The running {peer_name} peer (session-scoped); see .endpoints."
    return fixture


kafka = pytest.fixture(scope="session", name="kafka")(_peer_fixture("kafka"))
kube = pytest.fixture(scope="session", name="kube")(_peer_fixture("kube"))
helm = pytest.fixture(scope="session", name="helm")(_peer_fixture("helm"))
postgres = pytest.fixture(scope="session", name="postgres")(_peer_fixture("postgres"))
prometheus = pytest.fixture(scope="session", name="prometheus")(_peer_fixture("prometheus"))
alertmanager = pytest.fixture(scope="session", name="alertmanager")(_peer_fixture("alertmanager"))
smtp_server = pytest.fixture(scope="session", name="smtp_server")(_peer_fixture("smtp"))
slack_api = pytest.fixture(scope="session", name="slack_api")(_peer_fixture("slack"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        env = item.config.stash.get(_ENV_KEY, None)
        fixturenames = getattr(item, "fixturenames", ())
        if env is not None:
            wanted = [peer for fx, peer in FIXTURES.items() if fx in fixturenames]
            if not wanted and "testenv" in fixturenames:
                wanted = list(env.peers)  # a test driving TestEnv itself: show everything
            # Include what the wanted peers depend on (prometheus -> alertmanager).
            relevant = [
                name
                for name in env.peers
                if name in wanted
                or any(name in env.peers[w].requires for w in wanted if w in env.peers)
            ]
            text = env.log_tails(relevant)
            if text:
                report.sections.append(("testenv peer logs", text))
    return report
