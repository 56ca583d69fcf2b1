"""Prometheus from Debian's ``prometheus`` package, alerting into the Alertmanager peer.

Evaluation runs every second and alerts are resent every second, so a rule with
``for: 0s`` reaches Alertmanager within a few seconds. Tests swap rules and scrape
targets at run time with :meth:`PrometheusPeer.configure`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.env.alertmanager import binary_version, find_binary
from tests.env.base import Peer, PeerError, free_port, http_ok, http_request

BINARY_CANDIDATES = ("/usr/bin/prometheus", "prometheus")


class PrometheusPeer(Peer):
    name = "prometheus"
    requires = ("alertmanager",)
    version = "debian"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.binary = ""
        self.port = 0
        self.url = ""
        self.alertmanager_target = ""
        self.config_path = self.workdir / "prometheus.yml"
        self.rules_dir = self.workdir / "rules"
        self._generation = 0

    def build(self) -> None:
        self.binary = find_binary(BINARY_CANDIDATES, self.name, "prometheus")

    def start(self, deps: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        if not self.binary:
            self.build()
        am_url = str(deps["alertmanager"]["alertmanager_url"])
        self.alertmanager_target = am_url.removeprefix("http://").rstrip("/")
        self.port = free_port()
        self.ports = [self.port]
        self.url = f"http://127.0.0.1:{self.port}"
        storage = self.workdir / "data"
        storage.mkdir(parents=True, exist_ok=True)
        self.rules_dir.mkdir(parents=True, exist_ok=True)
        self._write(rule_groups=[], scrape_targets={})
        self.spawn(
            "prometheus",
            [
                self.binary,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={storage}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",  # POST /-/reload
                # Resend firing alerts every second instead of every minute: the first
                # send right after start-up can miss a not-yet-ready Alertmanager.
                "--rules.alert.resend-delay=1s",
                "--storage.tsdb.retention.time=1h",
                "--log.level=info",
            ],
        )
        self.wait_ready(lambda: http_ok(f"{self.url}/-/ready"), timeout=60, what="/-/ready")
        self._verify_active()
        return {
            "prometheus_url": self.url,
            "versions": {"prometheus": binary_version(self.binary)},
        }

    # -- test controls ---------------------------------------------------------------
    def configure(
        self,
        *,
        rules: Sequence[Mapping[str, Any]] | str | Path | None = None,
        scrape_targets: Mapping[str, Sequence[str]] | None = None,
        scrape_interval: str = "1s",
        evaluation_interval: str = "1s",
    ) -> None:
        """Replace rule groups and scrape jobs, reload, and verify both are live.

        ``rules`` is a list of rule groups (``{"name": ..., "rules": [...]}``), a single
        group's ``rules`` list wrapped for you if it lacks ``name``, or a rule file
        (its ``Path`` or YAML text, e.g. ``rules/prometheus/remediator-alerts.yml``).
        ``scrape_targets`` maps a job name to ``host:port`` targets; the ``prometheus``
        self-scrape job is always there unless you override it.
        """
        groups: list[dict[str, Any]]
        if isinstance(rules, Path):
            rules = rules.read_text()
        if rules is None:
            groups = []
        elif isinstance(rules, str):
            loaded = yaml.safe_load(rules) or {}
            groups = list(loaded.get("groups", []))
        else:
            groups = []
            bare: list[dict[str, Any]] = []
            for item in rules:
                if "name" in item and "rules" in item:
                    groups.append(dict(item))
                else:
                    bare.append(dict(item))
            if bare:
                groups.append({"name": "testenv", "rules": bare})
        self._write(
            rule_groups=groups,
            scrape_targets=dict(scrape_targets or {}),
            scrape_interval=scrape_interval,
            evaluation_interval=evaluation_interval,
        )
        status, body = http_request("POST", f"{self.url}/-/reload", timeout=30)
        if status != 200:
            raise PeerError(
                f"prometheus: reload rejected ({status}): {body.decode(errors='replace')}; "
                f"config {self.config_path}, log {self.workdir / 'prometheus.log'}"
            )
        self._verify_active(expected_groups=[g["name"] for g in groups])

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query; returns ``data.result``."""
        from urllib.parse import quote

        status, body = http_request(
            "GET", f"{self.url}/api/v1/query?query={quote(promql)}", timeout=10
        )
        if status != 200:
            raise PeerError(f"prometheus: query {promql!r} -> {status}: {body[:500]!r}")
        result: list[dict[str, Any]] = json.loads(body)["data"]["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        """GET ``/api/v1/alerts``: pending and firing alerts as Prometheus sees them."""
        status, body = http_request("GET", f"{self.url}/api/v1/alerts", timeout=10)
        if status != 200:
            raise PeerError(f"prometheus: GET /api/v1/alerts -> {status}")
        result: list[dict[str, Any]] = json.loads(body)["data"]["alerts"]
        return result

    # -- internals -------------------------------------------------------------------
    def _marker(self) -> str:
        return f"testenv-config-{self._generation}"

    def _write(
        self,
        *,
        rule_groups: list[dict[str, Any]],
        scrape_targets: dict[str, Sequence[str]],
        scrape_interval: str = "1s",
        evaluation_interval: str = "1s",
    ) -> None:
        self._generation += 1
        rule_file = self.rules_dir / "testenv.rules.yml"
        tmp = rule_file.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump({"groups": rule_groups}, sort_keys=False))
        tmp.replace(rule_file)
        # Always self-scrape (unless overridden) so PromQL over real series just works.
        jobs = {"prometheus": [f"127.0.0.1:{self.port}"], **scrape_targets}
        scrape_configs: list[dict[str, Any]] = [
            {"job_name": job, "static_configs": [{"targets": list(targets)}]}
            for job, targets in jobs.items()
        ]
        # A job without targets is legal and shows in /api/v1/status/config: its name
        # tells which generation of the config is live.
        scrape_configs.append({"job_name": self._marker(), "static_configs": []})
        config = {
            "global": {
                "scrape_interval": scrape_interval,
                "scrape_timeout": scrape_interval,
                "evaluation_interval": evaluation_interval,
            },
            "alerting": {
                "alertmanagers": [
                    {
                        "api_version": "v2",
                        "static_configs": [{"targets": [self.alertmanager_target]}],
                    }
                ]
            },
            "rule_files": [str(rule_file)],
            "scrape_configs": scrape_configs,
        }
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
        tmp.replace(self.config_path)

    def _verify_active(self, expected_groups: Sequence[str] = ()) -> None:
        status, body = http_request("GET", f"{self.url}/api/v1/status/config", timeout=10)
        active = json.loads(body)["data"]["yaml"] if status == 200 else ""
        if self._marker() not in active:
            raise PeerError(
                f"prometheus: reloaded config is not active (no {self._marker()!r}); "
                f"log {self.workdir / 'prometheus.log'}"
            )
        status, body = http_request("GET", f"{self.url}/api/v1/rules", timeout=10)
        loaded = {g["name"] for g in json.loads(body)["data"]["groups"]} if status == 200 else set()
        missing = set(expected_groups) - loaded
        if missing:
            raise PeerError(
                f"prometheus: rule groups {sorted(missing)} not loaded after reload; "
                f"log {self.workdir / 'prometheus.log'}"
            )
