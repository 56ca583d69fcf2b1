"""What a child process was started with: a wrapper script records its environment.

A connector is pointed at the wrapper instead of the real tool (the helm binary setting,
the PostgreSQL bindir, the alembic command); the wrapper writes ``env`` to a file, then
execs the real tool, so the tool still does its work and the test sees exactly the
environment the connector gave it.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

# The daemon's secrets and one unrelated credential, each holding this marker: none may
# reach a child.
MARKER = "Qx7Zk-child-env-4b2d"
PARENT_SECRETS = {
    "REMEDIATOR_WEBHOOK_TOKEN": f"{MARKER}-webhook",
    "REMEDIATOR_WEBHOOK_PASSWORD": f"{MARKER}-basic",
    "REMEDIATOR_SLACK__TOKEN": f"xoxb-{MARKER}-slack",
    "REMEDIATOR_EMAIL__PASSWORD": f"{MARKER}-smtp",
    "REMEDIATOR_KAFKA__SASL_PASSWORD": f"{MARKER}-sasl",
    "AWS_SECRET_ACCESS_KEY": f"{MARKER}-aws",
}


def set_parent_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in PARENT_SECRETS.items():
        monkeypatch.setenv(name, value)


def recording_wrapper(directory: Path, name: str, real: str, records: Path) -> Path:
    """``directory/name``: records its environment under ``records``, then runs ``real``."""
    directory.mkdir(parents=True, exist_ok=True)
    records.mkdir(parents=True, exist_ok=True)
    script = directory / name
    # Absolute paths only: the wrapper must not depend on the environment it records.
    script.write_text(f'#!/bin/sh\n/usr/bin/env > "{records}/{name}.$$.env"\nexec "{real}" "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return script


def recorded(records: Path, name: str) -> list[dict[str, str]]:
    """Each recorded start of ``name``: its environment (raw text kept under ``""``)."""
    starts = []
    for path in sorted(records.glob(f"{name}.*.env")):
        text = path.read_text(errors="replace")
        env = dict(line.partition("=")[::2] for line in text.splitlines() if "=" in line)
        env[""] = text
        starts.append(env)
    return starts


def assert_no_parent_secret(env: dict[str, str], *, set_by_connector: tuple[str, ...] = ()) -> None:
    """No marker anywhere, and no REMEDIATOR_* variable but those the connector set."""
    assert MARKER not in env[""], [line for line in env[""].splitlines() if MARKER in line]
    inherited = [n for n in env if n.startswith("REMEDIATOR_") and n not in set_by_connector]
    assert not inherited, inherited
