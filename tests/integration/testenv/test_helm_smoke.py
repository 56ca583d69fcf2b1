"""helm install / upgrade / rollback against the kube peer, with --wait really waiting."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.env import versions

pytestmark = pytest.mark.integration

CHART_YAML = """\
apiVersion: v2
name: smoke
version: 0.1.0
appVersion: "1"
"""

VALUES_YAML = """\
image: example/smoke:1
greeting: hello
replicas: 2
"""

DEPLOYMENT_YAML = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
spec:
  replicas: {{ .Values.replicas }}
  selector:
    matchLabels:
      app: {{ .Release.Name }}
  template:
    metadata:
      labels:
        app: {{ .Release.Name }}
    spec:
      containers:
        - name: app
          image: {{ .Values.image | quote }}
"""

CONFIGMAP_YAML = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-config
data:
  greeting: {{ .Values.greeting | quote }}
"""


@pytest.fixture
def chart(tmp_path: Path) -> Path:
    root = tmp_path / "smoke"
    (root / "templates").mkdir(parents=True)
    (root / "Chart.yaml").write_text(CHART_YAML)
    (root / "values.yaml").write_text(VALUES_YAML)
    (root / "templates" / "deployment.yaml").write_text(DEPLOYMENT_YAML)
    (root / "templates" / "configmap.yaml").write_text(CONFIGMAP_YAML)
    return root


class Cli:
    """helm and kubectl bound to the kube peer, with helm's state dirs kept in tmp."""

    def __init__(self, helm: Any, kube: Any, home: Path) -> None:
        self.helm_bin = helm.endpoints["helm"]
        self.kubectl_bin = kube.endpoints["kubectl"]
        self.env = {
            **os.environ,
            "KUBECONFIG": kube.endpoints["kubeconfig"],
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def _run(self, argv: list[str]) -> str:
        result = subprocess.run(
            argv, env=self.env, capture_output=True, text=True, timeout=120, check=False
        )
        assert result.returncode == 0, f"{argv}: {result.stdout}\n{result.stderr}"
        return result.stdout

    def helm(self, *args: str) -> str:
        return self._run([self.helm_bin, *args])

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self._run([self.kubectl_bin, *args, "-o", "json"]))


def test_helm_version_is_pinned(helm: Any, kube: Any, tmp_path: Path) -> None:
    out = Cli(helm, kube, tmp_path).helm("version", "--short")
    assert out.startswith(versions.HELM)
    assert helm.endpoints["versions"]["helm"] == versions.HELM


def test_install_upgrade_rollback(helm: Any, kube: Any, chart: Path, tmp_path: Path) -> None:
    cli = Cli(helm, kube, tmp_path / "helm-home")
    ns = f"helm-{uuid.uuid4().hex[:8]}"
    rel = "shop"
    common = ["--namespace", ns, "--wait", "--timeout", "90s"]

    def deployed() -> tuple[str, str, int]:
        """Template image, ConfigMap value, and how many pods of that image are Ready.

        Ready pods are what ``--wait`` waits for (the Deployment's own status counters
        may lag a moment behind), so this holds as soon as helm returns.
        """
        d = cli.kubectl_json("get", "deployment", rel, "-n", ns)
        cm = cli.kubectl_json("get", "configmap", f"{rel}-config", "-n", ns)
        image = d["spec"]["template"]["spec"]["containers"][0]["image"]
        pods = cli.kubectl_json("get", "pods", "-n", ns, "-l", f"app={rel}")["items"]
        ready = [
            p
            for p in pods
            if p["spec"]["containers"][0]["image"] == image
            and any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in p["status"].get("conditions", [])
            )
        ]
        return image, cm["data"]["greeting"], len(ready)

    try:
        cli.helm("install", rel, str(chart), "--create-namespace", *common)
        # --wait returned, so the pods kwok runs are already Ready.
        assert deployed() == ("example/smoke:1", "hello", 2)

        cli.helm("upgrade", rel, str(chart), "--set", "image=example/smoke:2,greeting=hi", *common)
        assert deployed() == ("example/smoke:2", "hi", 2)

        cli.helm("rollback", rel, "1", *common)
        assert deployed() == ("example/smoke:1", "hello", 2)

        history = json.loads(cli.helm("history", rel, "--namespace", ns, "-o", "json"))
        assert [(h["revision"], h["status"]) for h in history] == [
            (1, "superseded"),
            (2, "superseded"),
            (3, "deployed"),
        ]
        assert history[-1]["description"] == "Rollback to 1"
    finally:
        subprocess.run(
            [cli.kubectl_bin, "delete", "namespace", ns, "--wait=false", "--ignore-not-found"],
            env=cli.env,
            capture_output=True,
            timeout=60,
            check=False,
        )
