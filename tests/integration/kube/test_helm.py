"""helm connector against the real helm binary and control plane.

A ``pending-upgrade`` release is produced the way it happens in production: a
``helm upgrade --wait`` whose pods never become Ready is SIGKILLed (a CI runner or
deploy job killed mid-way) after helm stored the pending revision. helm cannot mark
the release failed, so the revision stays ``pending-upgrade`` for good.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from remediator.connectors.helm import (
    Helm,
    HelmReleaseNotFound,
    HelmReleasePending,
    HelmRollbackFailed,
)
from remediator.connectors.kubernetes.client import KubeClient, Ref
from remediator.settings import load_settings
from tests.integration.child_env import (
    assert_no_parent_secret,
    recorded,
    recording_wrapper,
    set_parent_secrets,
)
from tests.integration.kube.conftest import Kubectl

pytestmark = pytest.mark.integration

CHART_YAML = """\
apiVersion: v2
name: tiny
version: 0.1.0
appVersion: "1"
"""

VALUES_YAML = """\
image: example/tiny:1
replicas: 2
notReady: false
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
        {{- if .Values.notReady }}
        remediator.test/not-ready: "true"
        {{- end }}
    spec:
      containers:
        - name: app
          image: {{ .Values.image | quote }}
"""


@pytest.fixture
def chart(tmp_path: Path) -> Path:
    root = tmp_path / "tiny"
    (root / "templates").mkdir(parents=True)
    (root / "Chart.yaml").write_text(CHART_YAML)
    (root / "values.yaml").write_text(VALUES_YAML)
    (root / "templates" / "deployment.yaml").write_text(DEPLOYMENT_YAML)
    return root


class HelmCli:
    """helm run by hand, as an operator or a deploy job would."""

    def __init__(self, binary: str, kubeconfig: str, env: dict[str, str]) -> None:
        self.argv = [binary, f"--kubeconfig={kubeconfig}"]
        self.env = {**os.environ, **env}

    async def start(self, *args: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            *self.argv,
            *args,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )

    async def run(self, *args: str) -> str:
        proc = await self.start(*args)
        out, err = await asyncio.wait_for(proc.communicate(), 150)
        assert proc.returncode == 0, f"helm {args}: {out.decode()}\n{err.decode()}"
        return out.decode()


@pytest.fixture
async def release_ns(kubectl: Kubectl) -> AsyncIterator[str]:
    name = f"helm-{uuid.uuid4().hex[:8]}"
    kubectl.run("create", "namespace", name)
    yield name
    kubectl.run("delete", "namespace", name, "--wait=false")


def helm_env(tmp_path: Path) -> dict[str, str]:
    return {
        "HELM_CACHE_HOME": str(tmp_path / "helm" / "cache"),
        "HELM_CONFIG_HOME": str(tmp_path / "helm" / "config"),
        "HELM_DATA_HOME": str(tmp_path / "helm" / "data"),
    }


async def test_history_and_rollback(
    helm: Any, kube: Any, kc: KubeClient, chart: Path, release_ns: str, tmp_path: Path
) -> None:
    env = helm_env(tmp_path)
    cli = HelmCli(helm.endpoints["helm"], kube.endpoints["kubeconfig"], env)
    connector = Helm(
        binary=Path(helm.endpoints["helm"]),
        kubeconfig=Path(kube.endpoints["kubeconfig"]),
        env=env,
    )
    ns, rel = release_ns, "shop"
    common = ["--namespace", ns, "--wait", "--timeout", "60s"]
    await cli.run("install", rel, str(chart), *common)
    await cli.run("upgrade", rel, str(chart), "--set", "image=example/tiny:2", *common)

    history = await connector.history(release=rel, namespace=ns)
    assert [(h.revision, h.status) for h in history] == [(1, "superseded"), (2, "deployed")]
    assert history[0].chart == "tiny-0.1.0"
    assert history[0].updated is not None

    dry = await connector.rollback(
        release=rel, namespace=ns, revision=None, timeout_seconds=60, dry_run=True
    )
    assert (dry.from_revision, dry.to_revision, dry.new_revision) == (2, 1, None)
    assert len(await connector.history(release=rel, namespace=ns)) == 2

    done = await connector.rollback(
        release=rel, namespace=ns, revision=1, timeout_seconds=60, dry_run=False
    )
    assert (done.from_revision, done.to_revision, done.new_revision, done.status) == (
        2,
        1,
        3,
        "deployed",
    )
    deployment = await kc.get(Ref("Deployment", ns, rel))
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "example/tiny:1"
    # --wait: helm returned only once the rolled-back pods were available.
    assert deployment["status"].get("availableReplicas") == 2
    after = await connector.history(release=rel, namespace=ns)
    assert after[-1].description == "Rollback to 1"

    with pytest.raises(HelmReleaseNotFound):
        await connector.rollback(
            release=rel, namespace=ns, revision=9, timeout_seconds=60, dry_run=False
        )
    with pytest.raises(HelmReleaseNotFound) as missing:
        await connector.history(release="nope", namespace=ns)
    assert "not found" in missing.value.stderr


async def test_pending_release_needs_a_human(
    helm: Any, kube: Any, chart: Path, release_ns: str, tmp_path: Path
) -> None:
    env = helm_env(tmp_path)
    cli = HelmCli(helm.endpoints["helm"], kube.endpoints["kubeconfig"], env)
    connector = Helm(
        binary=Path(helm.endpoints["helm"]),
        kubeconfig=Path(kube.endpoints["kubeconfig"]),
        env=env,
    )
    ns, rel = release_ns, "cart"
    await cli.run("install", rel, str(chart), "--namespace", ns, "--wait", "--timeout", "60s")

    # A bad upgrade that --wait would wait on for 5 minutes; kill -9 it once helm has
    # stored revision 2 as pending-upgrade.
    upgrade = await cli.start(
        "upgrade", rel, str(chart), "--namespace", ns, "--set", "notReady=true",
        "--wait", "--timeout", "300s",
    )  # fmt: skip
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while True:
            history = await connector.history(release=rel, namespace=ns)
            if history[-1].status == "pending-upgrade":
                break
            assert loop.time() < deadline, history
            assert upgrade.returncode is None, "helm upgrade exited early"
            await asyncio.sleep(0.2)
    finally:
        if upgrade.returncode is None:
            upgrade.send_signal(signal.SIGKILL)
        await upgrade.communicate()

    await asyncio.sleep(1)
    history = await connector.history(release=rel, namespace=ns)
    assert [(h.revision, h.status) for h in history] == [(1, "deployed"), (2, "pending-upgrade")]
    assert history[-1].in_progress

    for dry_run in (True, False):
        with pytest.raises(HelmReleasePending) as pending:
            await connector.rollback(
                release=rel, namespace=ns, revision=1, timeout_seconds=60, dry_run=dry_run
            )
        assert pending.value.status == "pending-upgrade"
    # Refused before running anything: the history is untouched.
    assert await connector.history(release=rel, namespace=ns) == history


async def test_rollback_that_does_not_become_ready_fails(
    helm: Any, kube: Any, chart: Path, release_ns: str, tmp_path: Path
) -> None:
    env = helm_env(tmp_path)
    cli = HelmCli(helm.endpoints["helm"], kube.endpoints["kubeconfig"], env)
    connector = Helm(
        binary=Path(helm.endpoints["helm"]),
        kubeconfig=Path(kube.endpoints["kubeconfig"]),
        env=env,
    )
    ns, rel = release_ns, "pay"
    # Revision 1 is bad (installed without --wait, so helm calls it deployed); 2 is
    # good. Rolling back to 1 with --wait can never succeed.
    await cli.run("install", rel, str(chart), "--namespace", ns, "--set", "notReady=true")
    await cli.run("upgrade", rel, str(chart), "--namespace", ns)

    with pytest.raises(HelmRollbackFailed) as failed:
        await connector.rollback(
            release=rel, namespace=ns, revision=1, timeout_seconds=3, dry_run=False
        )
    assert failed.value.stderr  # helm's own words, for the journal
    history = await connector.history(release=rel, namespace=ns)
    assert [(h.revision, h.status) for h in history][-1] == (3, "failed")


async def test_helm_starts_with_an_allow_listed_environment(
    helm: Any,
    kube: Any,
    chart: Path,
    release_ns: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The daemon's secrets in its environment never reach helm; helm still works."""
    env = helm_env(tmp_path)
    cli = HelmCli(helm.endpoints["helm"], kube.endpoints["kubeconfig"], env)
    ns, rel = release_ns, "env"
    common = ["--namespace", ns, "--wait", "--timeout", "60s"]
    await cli.run("install", rel, str(chart), *common)
    await cli.run("upgrade", rel, str(chart), "--set", "image=example/tiny:2", *common)

    records = tmp_path / "records"
    wrapper = recording_wrapper(tmp_path / "bin", "helm", helm.endpoints["helm"], records)
    # Built as the runtime builds it: the helm binary setting points at the wrapper.
    k = load_settings(overrides={"kubernetes": {"helm_binary": str(wrapper)}}).kubernetes
    connector = Helm(binary=Path(k.helm_binary), kubeconfig=k.kubeconfig, kube_context=k.context)
    set_parent_secrets(monkeypatch)
    for name, value in env.items():  # helm's own settings, as an operator sets them
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("KUBECONFIG", kube.endpoints["kubeconfig"])

    history = await connector.history(release=rel, namespace=ns)
    assert [h.revision for h in history] == [1, 2]
    dry = await connector.rollback(
        release=rel, namespace=ns, revision=1, timeout_seconds=60, dry_run=True
    )
    assert dry.to_revision == 1

    starts = recorded(records, "helm")
    assert len(starts) == 3  # history, history, rollback --dry-run
    for started in starts:
        assert_no_parent_secret(started)
        assert started["KUBECONFIG"] == kube.endpoints["kubeconfig"]
        assert started["HELM_CACHE_HOME"] == env["HELM_CACHE_HOME"]
        assert started["PATH"] == os.environ["PATH"]
        assert "AWS_SECRET_ACCESS_KEY" not in started
