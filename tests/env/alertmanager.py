"""Alertmanager from Debian's ``prometheus-alertmanager`` package, run as our own process.

Tests point it at a webhook receiver at run time with :meth:`AlertmanagerPeer.configure`,
which rewrites the config, reloads, and checks the new config is the active one.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.env.base import Peer, PeerError, free_port, http_ok, http_request

BINARY_CANDIDATES = ("/usr/bin/prometheus-alertmanager", "prometheus-alertmanager", "alertmanager")

# Receives nothing: alerts posted before a test configures a webhook are simply dropped.
DEFAULT_RECEIVER = "null"


def find_binary(candidates: tuple[str, ...], peer: str, package: str) -> str:
    for candidate in candidates:
        found = shutil.which(candidate)
        if found:
            return found
    raise PeerError(
        f"{peer}: none of {', '.join(candidates)} found; install the Debian package "
        f"{package!r} (bash tests/env/install-system-deps.sh)"
    )


def binary_version(binary: str) -> str:
    """``alertmanager, version 0.25.0 (branch: ...)`` -> ``0.25.0``."""
    out = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, check=False, timeout=30
    )
    text = out.stdout + out.stderr
    match = re.search(r"version (\S+)", text)
    return match.group(1) if match else text.strip().splitlines()[0]


class AlertmanagerPeer(Peer):
    name = "alertmanager"
    version = "debian"  # whatever apt installed; the real one is reported in endpoints

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.binary = ""
        self.port = 0
        self.url = ""
        self.config_path = self.workdir / "alertmanager.yml"
        self._generation = 0

    def build(self) -> None:
        self.binary = find_binary(BINARY_CANDIDATES, self.name, "prometheus-alertmanager")

    def start(self, deps: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        if not self.binary:
            self.build()
        self.port = free_port()
        self.ports = [self.port]
        self.url = f"http://127.0.0.1:{self.port}"
        self._launch()
        return {
            "alertmanager_url": self.url,
            "versions": {"alertmanager": binary_version(self.binary)},
        }

    # -- test controls ---------------------------------------------------------------
    def configure(
        self,
        *,
        webhook_url: str,
        bearer_token: str | None = None,
        basic_auth: tuple[str, str] | None = None,
        group_by: list[str] | None = None,
        group_wait: str = "1s",
        group_interval: str = "2s",
        repeat_interval: str = "1h",
        send_resolved: bool = True,
        max_alerts: int = 0,
        receiver: str = "remediator",
    ) -> None:
        """Route every alert to one webhook receiver, reload, and verify it took effect."""
        if bearer_token is not None and basic_auth is not None:
            raise ValueError("Alertmanager allows bearer_token or basic_auth, not both")
        webhook: dict[str, Any] = {
            "url": webhook_url,
            "send_resolved": send_resolved,
            "max_alerts": max_alerts,
        }
        http_config: dict[str, Any] = {}
        if bearer_token is not None:
            http_config["authorization"] = {"type": "Bearer", "credentials": bearer_token}
        if basic_auth is not None:
            http_config["basic_auth"] = {"username": basic_auth[0], "password": basic_auth[1]}
        if http_config:
            webhook["http_config"] = http_config
        config = {
            "route": {
                "receiver": receiver,
                "group_by": list(group_by) if group_by is not None else ["alertname", "service"],
                "group_wait": group_wait,
                "group_interval": group_interval,
                "repeat_interval": repeat_interval,
            },
            "receivers": [{"name": receiver, "webhook_configs": [webhook]}],
        }
        self.apply_config(config)

    def reset(self) -> None:
        """A clean slate on the same port: null receiver, no alerts, no silences.

        A restart with empty storage, not a reload: Alertmanager's notification log
        remembers what each receiver was already told, so after a reload an alert equal
        to one an earlier test sent would not be delivered again until repeat_interval.
        """
        for proc in self.processes:
            proc.stop()
        self.processes.clear()
        self._launch()

    def apply_config(self, config: dict[str, Any]) -> None:
        """Write any Alertmanager config, reload, and check it is the active one."""
        self._write_config(config)
        marker = self._marker()
        status, body = http_request("POST", f"{self.url}/-/reload", timeout=10)
        if status != 200:
            raise PeerError(
                f"alertmanager: reload rejected ({status}): {body.decode(errors='replace')}; "
                f"config {self.config_path}, log {self.workdir / 'alertmanager.log'}"
            )
        # The reload answer is synchronous, but check what the API reports as active so
        # a silently ignored file (wrong path, stale mount) cannot pass unnoticed.
        status, body = http_request("GET", f"{self.url}/api/v2/status", timeout=10)
        active = json.loads(body).get("config", {}).get("original", "") if status == 200 else ""
        if marker not in active:
            raise PeerError(
                f"alertmanager: reloaded config is not active (no {marker!r} in /api/v2/status);"
                f" log {self.workdir / 'alertmanager.log'}"
            )

    def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        """POST alerts to ``/api/v2/alerts`` (``labels``, ``annotations``, ``startsAt``...)."""
        status, body = http_request("POST", f"{self.url}/api/v2/alerts", body=alerts, timeout=10)
        if status != 200:
            raise PeerError(
                f"alertmanager: POST /api/v2/alerts -> {status}: {body.decode(errors='replace')}"
            )

    def alerts(self, *, active_only: bool = False) -> list[dict[str, Any]]:
        """GET ``/api/v2/alerts``; what Alertmanager currently holds."""
        query = "?active=true&silenced=false&inhibited=false" if active_only else ""
        status, body = http_request("GET", f"{self.url}/api/v2/alerts{query}", timeout=10)
        if status != 200:
            raise PeerError(f"alertmanager: GET /api/v2/alerts -> {status}")
        result: list[dict[str, Any]] = json.loads(body)
        return result

    # -- internals -------------------------------------------------------------------
    def _launch(self) -> None:
        storage = self.workdir / "data"
        shutil.rmtree(storage, ignore_errors=True)
        storage.mkdir(parents=True)
        self._write_config(self._default_config())
        self.spawn(
            "alertmanager",
            [
                self.binary,
                f"--config.file={self.config_path}",
                f"--storage.path={storage}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                # Empty disables HA gossip, which would otherwise bind 0.0.0.0:9094.
                "--cluster.listen-address=",
                "--log.level=debug",
            ],
        )
        self.wait_ready(lambda: http_ok(f"{self.url}/-/ready"), timeout=30, what="/-/ready")

    def _default_config(self) -> dict[str, Any]:
        return {
            "route": {"receiver": DEFAULT_RECEIVER, "group_wait": "1s", "group_interval": "2s"},
            "receivers": [{"name": DEFAULT_RECEIVER}],
        }

    def _marker(self) -> str:
        return f"testenv-config-{self._generation}"

    def _write_config(self, config: dict[str, Any]) -> None:
        self._generation += 1
        config = dict(config)
        # An unreferenced receiver is legal and survives into /api/v2/status, so its
        # name tells which generation of the config is live.
        config["receivers"] = [*config.get("receivers", []), {"name": self._marker()}]
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
        tmp.replace(self.config_path)

    @property
    def log_path(self) -> Path:
        return self.workdir / "alertmanager.log"
