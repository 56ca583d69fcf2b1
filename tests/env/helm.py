"""helm v3, built from the Go module proxy; it talks to the kube peer through its kubeconfig.

No process of its own: start() only hands out the binary. Releases are stored as Secrets,
so install/upgrade/rollback work against the kwok-backed control plane, and ``--wait``
works because kwok makes pods Ready.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tests.env import gobuild, versions
from tests.env.base import Peer, PeerError, run_checked


class HelmPeer(Peer):
    name = "helm"
    requires = ("kube",)
    version = versions.HELM

    def build(self) -> None:
        gobuild.build_go(gobuild.HELM, self.progress)

    def start(self, deps: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        self.build()
        helm = gobuild.HELM.binary("helm")
        # Fail here, naming the binary, rather than in the first test that uses it.
        out = run_checked([str(helm), "version", "--short"], what="helm: version")
        if not out.strip().startswith(versions.HELM):
            raise PeerError(f"helm: {helm} reports {out.strip()!r}, expected {versions.HELM}")
        self.endpoints = {"helm": str(helm), "versions": {"helm": versions.HELM}}
        return self.endpoints
