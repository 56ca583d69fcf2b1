"""Every bench/ script still runs, end to end, at a size that takes seconds.

Performance is measured by bench/, never asserted here: these runs check that each
script starts its peers, drives them, passes its own integrity checks (every
acknowledged alert journaled and decided once, every old signal pruned, every rollback
verified) and prints its figure against the issue's target. bench/prune.py once stopped
working for days unnoticed, because nothing ran it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (["intake.py", "--seconds", "1"], "issue 18 target: 30,000 journaled alerts/s"),
        (["intake.py", "--seconds", "1", "--alerts-per-request", "1"],
         "issue 18 target: 5,000 requests/s"),
        (["intake.py", "--seconds", "1", "--journal", "postgresql"],
         "issue 18 target: 30,000 journaled alerts/s"),
        (["floor.py", "--seconds", "1"], "issue 18's target (30,000 alerts/s) for this floor"),
        (["pipeline.py", "--e2e-requests", "20", "--storm-alerts", "200",
          "--memory-alerts", "1000"], "(target under 300 MiB)"),
        (["prune.py", "--rows", "2000", "--rate", "20", "--baseline-seconds", "1",
          "--warmup-seconds", "0.5", "--settle-seconds", "0"], "pruned:           2,000 rows"),
        (["first_write.py", "--services", "3", "--timeout", "120"],
         "first Kubernetes write p99"),
    ],
    ids=["intake", "intake-1", "intake-postgresql", "floor", "pipeline", "prune", "first-write"],
)  # fmt: skip
def test_the_script_runs_and_passes_its_own_checks(script: list[str], expected: str) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / script[0]), *script[1:]],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert expected in output, output[-4000:]
