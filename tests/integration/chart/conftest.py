"""helm and kubectl on the chart in helm/remediator, against the kube peer."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).parents[3]
CHART = REPO / "helm" / "remediator"
FULL_VALUES = Path(__file__).with_name("full-values.yaml")
POSTGRES_VALUES = Path(__file__).with_name("postgres-values.yaml")


class Cli:
    """helm and kubectl bound to the kube peer, with helm's state dirs kept in tmp."""

    def __init__(self, helm: Any, kube: Any, home: Path) -> None:
        self.helm_bin = helm.endpoints["helm"]
        self.kubectl_bin = kube.endpoints["kubectl"]
        self.kubeconfig = Path(kube.endpoints["kubeconfig"])
        self.env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def run(self, argv: list[str], *, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv, env=self.env, input=stdin, capture_output=True, text=True, timeout=180,
            check=False,
        )  # fmt: skip

    def _ok(self, argv: list[str], stdin: str | None = None) -> str:
        result = self.run(argv, stdin=stdin)
        assert result.returncode == 0, f"{argv}: {result.stdout}\n{result.stderr}"
        return result.stdout

    def helm(self, *args: str) -> str:
        return self._ok([self.helm_bin, *args])

    def helm_fails(self, *args: str) -> str:
        """helm's error output of a command that must fail."""
        result = self.run([self.helm_bin, *args])
        assert result.returncode != 0, f"helm {args} succeeded:\n{result.stdout}"
        return result.stderr

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        return self._ok([self.kubectl_bin, *args], stdin)

    def template(self, *args: str, namespace: str = "remediator") -> list[dict[str, Any]]:
        out = self.helm("template", "rem", str(CHART), "--namespace", namespace, *args)
        return [d for d in yaml.safe_load_all(out) if d]


def only(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


@pytest.fixture
def cli(helm: Any, kube: Any, tmp_path: Path) -> Cli:
    return Cli(helm, kube, tmp_path / "helm-home")


@pytest.fixture
def namespaces(cli: Cli) -> Iterator[Any]:
    """Makes fresh namespaces on demand; deletes them after the test."""
    made: list[str] = []

    def make(prefix: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        cli.kubectl("create", "namespace", name)
        made.append(name)
        return name

    yield make
    for name in made:
        cli.run([cli.kubectl_bin, "delete", "namespace", name, "--wait=false"])
