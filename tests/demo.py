"""``make demo``: the whole story in the terminal, each hop with its time.

Starts the real peers it needs (kwok control plane, Kafka, Prometheus, Alertmanager;
built on first use, cached in ~/.cache/remediator/testenv), then tells the story of
tests/story.py: a release starts failing, Prometheus fires HighErrorRate, Alertmanager
delivers it, remediator rolls the Deployment back on the kwok cluster, the error rate
falls, and the remediation is verified and recorded. Everything is stopped at the end;
logs stay in var/testenv/demo-<time>/.

    make demo                 # or: .venv/bin/python -m tests.demo
"""

from __future__ import annotations

import sys
import time

from tests.env.session import VAR_DIR, TestEnv
from tests.story import Narrator, Story

PEERS = ("kube", "kafka", "prometheus", "alertmanager")


def main() -> int:
    workdir = VAR_DIR / f"demo-{time.strftime('%Y%m%dT%H%M%S')}"
    print(f"remediator demo: starting {', '.join(PEERS)} (first run builds them) ...")
    began = time.monotonic()
    with TestEnv(workdir / "peers", progress=lambda line: print(f"  {line}")) as env:
        kube, kafka, prometheus, alertmanager = env.start(PEERS)
        print(f"peers up in {time.monotonic() - began:.0f}s\n")
        narrate = Narrator()
        with Story(workdir / "story", kube=kube, kafka=kafka, prometheus=prometheus,
                   alertmanager=alertmanager, narrate=narrate) as story:  # fmt: skip
            outcome = story.run()
            daemon = story.daemon
            assert daemon is not None
            rid = outcome.remediation["id"]
            status, record = daemon.get(f"/api/v1/remediations/{rid}/record?format=md")
        print(f"\nthe rollback record ({daemon.url}/api/v1/remediations/"
              f"{outcome.remediation['id']}/record):\n")  # fmt: skip
        print(record if status == 200 and isinstance(record, str) else f"HTTP {status}")
    print(f"demo finished in {time.monotonic() - began:.0f}s; logs in {workdir}")
    return 0 if outcome.remediation["status"] == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
