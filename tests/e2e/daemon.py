"""Runs ``python -m remediator run`` as a real process for end-to-end tests."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from tests.env.base import free_port, tail
from tests.unit.payloads import alert, payload

TOKEN = "e2e-token-5f2c"  # the webhook's: ingest only
OPERATOR_TOKEN = "e2e-operator-token-3d9a61f0c4b27e58a1d6"  # read and operate
RULES = Path(__file__).resolve().parents[2] / "rules"
# Every approver role the shipped rules name: the operator may approve any plan.
APPROVER_ROLES = ["product-manager", "tech-lead", "dba", "security-lead", "ops-lead"]


def principals_file(path: Path, entries: list[dict[str, Any]]) -> Path:
    """A principals file (JSON is YAML) for ``entries`` given with plain ``token``s."""
    principals = []
    for entry in entries:
        entry = dict(entry)
        token = entry.pop("token", None)
        if token is not None:
            entry["tokens"] = ["sha256:" + hashlib.sha256(token.encode()).hexdigest()]
        principals.append(entry)
    path.write_text(json.dumps({"principals": principals}, indent=2))
    return path


class Daemon:
    def __init__(
        self,
        workdir: Path,
        *,
        token: str = TOKEN,
        operator_token: str = OPERATOR_TOKEN,
        extra_env: dict[str, str] | None = None,
        rules: Path = RULES,
        client_tls: ssl.SSLContext | None = None,
        config: Path | None = None,
        journal_url: str | None = None,
        principals: list[dict[str, Any]] | None = None,
    ):
        """``principals`` are more entries of the principals file (with plain ``token``s),
        beside the operator's."""
        self.rules = rules
        self.config = config  # a settings file (--config); the flags below still win
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.token = token
        self.operator_token = operator_token
        # With client_tls the daemon is reached over https (its settings come in extra_env).
        self.client_tls = client_tls
        self.journal = workdir / "journal.db"
        # Several daemons share one PostgreSQL journal (its DSN goes in the environment,
        # not on the command line); by default each has its own SQLite journal.
        self.journal_url = journal_url
        self.log_path = workdir / "daemon.log"
        self.port = free_port()
        self.extra_env = extra_env or {}
        self.principals = principals or []
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.client_tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def webhook_url(self) -> str:
        return f"{self.url}/api/v1/webhooks/alertmanager"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("REMEDIATOR_")}
        # Never let a test daemon find a real cluster through the developer's kubeconfig.
        env.pop("KUBERNETES_SERVICE_HOST", None)
        env["KUBECONFIG"] = str(self.workdir / "no-kubeconfig")
        operator = {"name": "e2e-operator", "roles": ["read", "operate"],
                    "approver_roles": APPROVER_ROLES, "token": self.operator_token}  # fmt: skip
        principals = principals_file(self.workdir / "principals.json",
                                     [operator, *self.principals])  # fmt: skip
        env.update({
            "REMEDIATOR_WEBHOOK_TOKEN": self.token,
            "REMEDIATOR_AUTH__PRINCIPALS_FILE": str(principals),
            **self.extra_env,
        })  # fmt: skip
        if self.journal_url is not None:
            env["REMEDIATOR_JOURNAL__URL"] = self.journal_url
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "remediator", "run", "--listen", f"127.0.0.1:{self.port}",
             *self._journal_args(), "--rules", str(self.rules),
             *(["--config", str(self.config)] if self.config is not None else [])],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            cwd=self.workdir,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited {self.proc.returncode}:\n{tail(self.log_path)}")
            try:
                if self.get("/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"daemon not ready in 30s:\n{tail(self.log_path)}")

    def _journal_args(self) -> list[str]:
        return [] if self.journal_url is not None else ["--journal", f"sqlite:///{self.journal}"]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout)
        self.proc = None
        return code

    def get(self, path: str, *, auth: bool = True) -> tuple[int, Any]:
        """GET as the operator principal (read and operate); the webhook token is ingest-only."""
        request = urllib.request.Request(self.url + path)  # noqa: S310 - loopback http(s)
        if auth:
            request.add_header("Authorization", f"Bearer {self.operator_token}")
        try:
            with urllib.request.urlopen(  # noqa: S310
                request, timeout=10, context=self.client_tls
            ) as resp:
                body = resp.read()
                status = resp.status
        except urllib.error.HTTPError as err:
            body, status = err.read(), err.code
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body.decode()

    def post(
        self, path: str, body: Any, *, token: str | None = None, method: str = "POST"
    ) -> tuple[int, Any]:
        """POST (or ``method``) JSON as the principal of ``token`` (default: the operator)."""
        request = urllib.request.Request(  # noqa: S310 - loopback http(s)
            self.url + path, data=orjson.dumps(body), method=method,
            headers={"Authorization": f"Bearer {token or self.operator_token}",
                     "Content-Type": "application/json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(  # noqa: S310
                request, timeout=30, context=self.client_tls
            ) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def signals(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = ""
        while True:
            status, page = self.get(f"/api/v1/signals?limit=1000{cursor}")
            assert status == 200, page
            items += page["items"]
            if page["next"] is None:
                return items
            cursor = f"&cursor={page['next']}"

    def remediations(self) -> list[dict[str, Any]]:
        """The newest 100 remediations (what a test's daemon decides fits in one page)."""
        status, page = self.get("/api/v1/remediations?limit=100")
        assert status == 200, page
        return list(page["items"])

    def post_alert(
        self, name: str, service: str, namespace: str, fingerprint: str
    ) -> dict[str, Any]:
        """Post one firing alert (starting now); assert it was journaled; the answer."""
        body = payload([alert(name=name, service=service, namespace=namespace,
                              fingerprint=fingerprint, starts_at=datetime.now(UTC).isoformat())])  # fmt: skip
        request = urllib.request.Request(  # noqa: S310 - loopback http
            self.webhook_url, data=orjson.dumps(body), method="POST",
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310
            answer: dict[str, Any] = json.loads(resp.read())
        return answer

    def metric(self, name: str) -> float:
        """Sum of every sample of a metric family line-matched by exact series prefix."""
        status, text = self.get("/metrics", auth=False)
        assert status == 200
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total
