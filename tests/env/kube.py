"""A real Kubernetes control plane (etcd, apiserver, controller-manager, scheduler) with kwok.

There is no kubelet: kwok plays every node and moves pods through their lifecycle
according to ``tests/env/kwok/stages.yaml``. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import secrets
import shutil
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from tests.env import gobuild, versions
from tests.env.base import (
    ManagedProcess,
    Peer,
    PeerError,
    free_port,
    listening,
    run_checked,
    tail,
)

STAGES_FILE = Path(__file__).parent / "kwok" / "stages.yaml"
SERVICE_CIDR = "10.96.0.0/24"
POD_CIDR = "10.244.0.1/16"  # kwok hands out fake pod IPs from here; nothing routes to them
FAKE_NODE_IP = "10.244.255.1"
FAKE_NODES = ("kwok-node-0", "kwok-node-1")
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"

# Generous so that no test is ever limited by "capacity" that does not exist.
_NODE_RESOURCES = {"cpu": "64", "memory": "256Gi", "pods": "500", "ephemeral-storage": "1Ti"}


def _fake_node(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_NODE_ANNOTATION: "fake"},
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
            },
        },
        "status": {"allocatable": _NODE_RESOURCES, "capacity": _NODE_RESOURCES},
    }


class KubePeer(Peer):
    name = "kube"
    version = versions.KUBERNETES

    def __init__(
        self,
        *,
        audit_policy: Mapping[str, Any] | None = None,
        controller_qps: int | None = None,
        **kwargs: Any,
    ) -> None:
        """``audit_policy``: an audit.k8s.io/v1 Policy; when given, the apiserver writes
        the events it selects to ``audit.log`` (JSON lines) in the work dir, and the
        endpoints name that file as ``audit_log`` (benchmarks time requests by it).

        ``controller_qps``: the controller-manager's and the scheduler's requests a
        second to the apiserver (burst twice that); their defaults (20 and 50) roll
        out a few Deployments a second, which is slow to set up hundreds."""
        super().__init__(**kwargs)
        self._audit_policy = audit_policy
        self._controller_qps = controller_qps
        self._audit_log = self.workdir / "audit.log"
        self._ports: dict[str, int] = {}
        self._token = ""
        self._ca_file = self.workdir / "pki" / "apiserver.crt"
        self._ssl: ssl.SSLContext | None = None
        self._crd_apply: ManagedProcess | None = None
        self._crd_names: list[str] = []

    # -- build ---------------------------------------------------------------------
    def build(self) -> None:
        for component in (gobuild.ETCD, gobuild.KUBERNETES, gobuild.KWOK):
            gobuild.build_go(component, self.progress)
        gobuild.build_gateway_api_crds(self.progress)

    def _bin(self, component: gobuild.GoComponent, binary: str) -> str:
        path = component.binary(binary)
        if not path.is_file():
            raise PeerError(f"kube: {path} missing; run build() (python -m tests.env.gobuild)")
        return str(path)

    # -- start ---------------------------------------------------------------------
    def start(self, deps: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        self.build()  # a stat per binary when the cache is warm
        started = time.monotonic()
        try:
            return self._start(started)
        except BaseException:
            self.stop()
            raise

    def _start(self, started: float) -> dict[str, Any]:
        def phase(what: str) -> None:
            self.progress(f"kube: {what} ({time.monotonic() - started:.1f}s)")

        self.ports.clear()  # a restart gets new ones
        # Every start is a fresh, empty cluster, even in a reused work dir.
        shutil.rmtree(self.workdir / "etcd-data", ignore_errors=True)
        self._prepare_credentials()
        etcd_url = self._start_etcd()
        phase("etcd up")
        server = self._start_apiserver(etcd_url)
        phase("apiserver ready")
        kubeconfig = self._write_kubeconfig(self.workdir / "kubeconfig", server)
        self._start_gateway_crds_apply(kubeconfig)
        self._start_controller_manager(kubeconfig)
        self._start_scheduler(kubeconfig)
        self._start_kwok(kubeconfig)
        self._kubectl(kubeconfig, "apply", "-f", str(self._write_nodes()), what="create fake nodes")
        self._wait_cluster_usable(phase)
        self.progress(f"kube: ready at {server} in {time.monotonic() - started:.1f}s")
        audit = {"audit_log": str(self._audit_log)} if self._audit_policy is not None else {}
        self.endpoints = {
            **audit,
            "kubeconfig": str(kubeconfig),
            "kube_server": server,
            "kube_token": self._token,
            "kube_ca": str(self._ca_file),
            "kubectl": self._bin(gobuild.KUBERNETES, "kubectl"),
            "versions": {
                "kubernetes": versions.KUBERNETES,
                "etcd": versions.ETCD,
                "kwok": versions.KWOK,
                "gateway_api": versions.GATEWAY_API,
            },
        }
        return self.endpoints

    def _prepare_credentials(self) -> None:
        (self.workdir / "pki").mkdir(exist_ok=True)
        self._token = secrets.token_hex(24)
        # Static token in system:masters: full access without client certificates.
        (self.workdir / "tokens.csv").write_text(
            f'{self._token},admin,admin-uid,"system:masters"\n'
        )
        sa_key = self.workdir / "pki" / "sa.key"
        if not sa_key.exists():
            run_checked(
                ["openssl", "genrsa", "-out", str(sa_key), "2048"],
                what="kube: generate service-account key",
            )
            run_checked(
                ["openssl", "rsa", "-in", str(sa_key), "-pubout", "-out", str(sa_key) + ".pub"],
                what="kube: derive service-account public key",
            )

    def _start_etcd(self) -> str:
        client, peer = self._port("etcd"), self._port("etcd_peer")
        client_url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        proc = self.spawn(
            "etcd",
            [
                self._bin(gobuild.ETCD, "etcd"),
                "--name=kube-etcd",
                f"--data-dir={self.workdir / 'etcd-data'}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=kube-etcd={peer_url}",
                "--unsafe-no-fsync",  # test data: speed over durability
                "--log-level=warn",
            ],
        )
        self._wait_http(proc, f"{client_url}/health", timeout=30, ok=_etcd_healthy)
        return client_url

    def _start_apiserver(self, etcd_url: str) -> str:
        port = self._port("apiserver")
        pki = self.workdir / "pki"
        proc = self.spawn(
            "kube-apiserver",
            [
                self._bin(gobuild.KUBERNETES, "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={port}",
                # No cert given: the apiserver writes a self-signed CA + serving cert for
                # 127.0.0.1 here (apiserver.crt holds the serving cert followed by the CA).
                f"--cert-dir={pki}",
                f"--token-auth-file={self.workdir / 'tokens.csv'}",
                "--authorization-mode=Node,RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'sa.key.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                # The "kubernetes" Service would point at 127.0.0.1, which Endpoints reject.
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                *self._audit_args(),
            ],
        )
        server = f"https://127.0.0.1:{port}"
        # The CA file appears only once the apiserver has generated it.
        self._wait_http(proc, f"{server}/readyz", timeout=90, ok=lambda s, _b: s == 200)
        return server

    def _audit_args(self) -> list[str]:
        if self._audit_policy is None:
            return []
        policy = self.workdir / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump(dict(self._audit_policy)))
        self._audit_log.unlink(missing_ok=True)  # a fresh cluster, a fresh log
        return [
            f"--audit-policy-file={policy}",
            f"--audit-log-path={self._audit_log}",
            "--audit-log-format=json",
            # Each event is written as its request is handled: nothing is lost or
            # late when the log is read right after the requests.
            "--audit-log-mode=blocking",
        ]

    def _component_args(self, kubeconfig: Path, name: str) -> list[str]:
        port = self._port(name)
        qps = self._controller_qps
        rate = [] if qps is None else [f"--kube-api-qps={qps}", f"--kube-api-burst={2 * qps}"]
        return [
            # No --authentication/--authorization-kubeconfig: nothing scrapes these
            # components, /healthz is always allowed, and delegation only adds log noise.
            f"--kubeconfig={kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            # Else the self-signed serving cert goes to /var/run/kubernetes.
            f"--cert-dir={self.workdir / 'pki' / name}",
            *rate,
        ]

    def _start_controller_manager(self, kubeconfig: Path) -> None:
        pki = self.workdir / "pki"
        self.spawn(
            "kube-controller-manager",
            [
                self._bin(gobuild.KUBERNETES, "kube-controller-manager"),
                *self._component_args(kubeconfig, "kube-controller-manager"),
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={self._ca_file}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
            ],
        )

    def _start_scheduler(self, kubeconfig: Path) -> None:
        self.spawn(
            "kube-scheduler",
            [
                self._bin(gobuild.KUBERNETES, "kube-scheduler"),
                *self._component_args(kubeconfig, "kube-scheduler"),
            ],
        )

    def _start_kwok(self, kubeconfig: Path) -> None:
        port = self._port("kwok")
        self.spawn(
            "kwok",
            [
                self._bin(gobuild.KWOK, "kwok"),
                f"--kubeconfig={kubeconfig}",
                f"--config={STAGES_FILE}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
                f"--node-ip={FAKE_NODE_IP}",
                f"--cidr={POD_CIDR}",
                f"--server-address=127.0.0.1:{port}",
                # kwok renews the nodes' Leases too, the heartbeat the node lifecycle
                # controller watches: fake nodes never turn NotReady mid-session.
                "--node-lease-duration-seconds=40",
            ],
        )

    def _write_nodes(self) -> Path:
        path = self.workdir / "nodes.yaml"
        path.write_text(yaml.safe_dump_all([_fake_node(n) for n in FAKE_NODES]))
        return path

    def _start_gateway_crds_apply(self, kubeconfig: Path) -> None:
        """Apply the Gateway API CRDs in the background: the apiserver spends seconds of
        CPU on their OpenAPI schemas, which overlaps with the other components starting."""
        crds = gobuild.gateway_api_crds_dir()
        self._crd_names = _crd_names(crds)
        self._crd_apply = ManagedProcess(
            name="gateway-crds-apply",
            # Server-side apply: the CRDs are too large for the last-applied annotation.
            argv=[
                self._bin(gobuild.KUBERNETES, "kubectl"),
                f"--kubeconfig={kubeconfig}",
                "apply",
                "--server-side",
                "--force-conflicts",
                "-f",
                str(crds),
            ],
            log_path=self.workdir / "gateway-crds-apply.log",
        )
        self._crd_apply.start()

    def _gateway_crds_established(self) -> bool:
        assert self._crd_apply is not None
        assert self._crd_apply.proc is not None
        code = self._crd_apply.proc.poll()
        if code is None:
            return False
        if code != 0:
            log = self._crd_apply.log_path
            raise PeerError(
                f"kube: kubectl apply of the Gateway API CRDs failed (exit {code}); "
                f"log: {log}\n{tail(log)}"
            )
        prefix = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
        return all(_condition(self._api_json(prefix + n), "Established") for n in self._crd_names)

    def _wait_cluster_usable(self, phase: Callable[[str], None]) -> None:
        # Polled here rather than with `kubectl wait`, so that a component dying
        # meanwhile fails start() at once, naming its own log.
        self._poll(self._gateway_crds_established, timeout=90, what="Gateway API CRDs")
        phase("Gateway API CRDs established")
        self._poll(
            lambda: all(
                _condition(self._api_json(f"/api/v1/nodes/{n}"), "Ready") for n in FAKE_NODES
            ),
            timeout=60,
            what=f"kwok nodes {', '.join(FAKE_NODES)} Ready",
        )
        phase("kwok nodes Ready")
        for name in ("kube-controller-manager", "kube-scheduler"):
            url = f"https://127.0.0.1:{self._ports[name]}/healthz"
            self._poll(
                functools.partial(_healthz_ok, url),
                timeout=30,
                what=f"{name} /healthz",
            )
        # The ServiceAccount controller creates "default" in each namespace; pods in a
        # namespace are rejected until it exists.
        self._poll(
            lambda: (
                self._api_json("/api/v1/namespaces/default/serviceaccounts/default") is not None
            ),
            timeout=60,
            what="ServiceAccount default/default",
        )

    # -- helpers -------------------------------------------------------------------
    def _port(self, name: str) -> int:
        """A free loopback port for one listener, recorded in ``self.ports`` for stop()."""
        port = free_port()
        self._ports[name] = port
        self.ports.append(port)
        return port

    def _kubectl(self, kubeconfig: Path, *args: str, what: str) -> str:
        argv = [self._bin(gobuild.KUBERNETES, "kubectl"), f"--kubeconfig={kubeconfig}", *args]
        try:
            return run_checked(argv, what=f"kube: {what}")
        except PeerError as exc:
            raise PeerError(f"{exc}\n{self._logs_summary()}") from None

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context(cafile=str(self._ca_file))
        return self._ssl

    def _api_json(self, path: str) -> dict[str, Any] | None:
        """GET an apiserver path; the object, or None unless it answered 200."""
        url = f"https://127.0.0.1:{self._ports['apiserver']}{path}"
        status, body = _http_status(url, token=self._token, context=self._ssl_context())
        if status != 200:
            return None
        result: dict[str, Any] = json.loads(body)
        return result

    def _wait_http(
        self,
        proc: ManagedProcess,
        url: str,
        *,
        timeout: float,
        ok: Callable[[int, bytes], bool],
    ) -> None:
        def ready() -> bool:
            proc.check_alive()
            context = None
            if url.startswith("https://"):
                if not self._ca_file.exists():
                    return False
                context = self._ssl_context()
            status, body = _http_status(url, token=self._token, context=context)
            return bool(ok(status, body))

        self._poll(ready, timeout=timeout, what=f"{proc.name} at {url}", proc=proc)

    def _poll(
        self,
        predicate: Callable[[], bool],
        *,
        timeout: float,
        what: str,
        proc: ManagedProcess | None = None,
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p in self.processes:
                p.check_alive()  # a crashed component fails fast, with its log tail
            if predicate():
                return
            time.sleep(0.1)
        log = proc.log_path if proc else None
        detail = f"; log: {log}\n{tail(log)}" if log else f"\n{self._logs_summary()}"
        raise PeerError(f"kube: {what} not ready after {timeout:.0f}s{detail}")

    def _logs_summary(self) -> str:
        return "\n".join(
            f"--- {p.log_path} (last lines)\n{tail(p.log_path, 10)}" for p in self.processes
        )

    def _write_kubeconfig(self, path: Path, server: str) -> Path:
        ca = base64.b64encode(self._ca_file.read_bytes()).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "kube", "cluster": {"server": server, "certificate-authority-data": ca}}
            ],
            "users": [{"name": "admin", "user": {"token": self._token}}],
            "contexts": [{"name": "kube", "context": {"cluster": "kube", "user": "admin"}}],
            "current-context": "kube",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    # -- stop ----------------------------------------------------------------------
    def stop(self) -> None:
        if self._crd_apply is not None:
            try:
                self._crd_apply.stop()
            except Exception as exc:  # noqa: BLE001 - teardown must go on
                self.progress(f"kube: stopping the CRD apply failed: {exc}")
            self._crd_apply = None
        super().stop()
        # A SIGTERM'd server can linger in shutdown for a moment after its process
        # group is gone; a port still bound here would leak into the next session.
        deadline = time.monotonic() + 10
        for port in self.ports:
            while listening(port) and time.monotonic() < deadline:
                time.sleep(0.1)
            if listening(port):
                self.progress(f"kube: port {port} still open after stop")
        self._ports.clear()


def _crd_names(directory: Path) -> list[str]:
    """The CRD names under ``directory``: one CRD per file, its metadata.name at indent 2.

    A text scan, because parsing ~1 MB of CRD YAML in pure Python takes seconds.
    """
    names = []
    for path in sorted(directory.glob("*.yaml")):
        text = path.read_text()
        if "\nkind: CustomResourceDefinition\n" not in "\n" + text:
            continue
        match = re.search(r"^  name: ['\"]?([a-z0-9.-]+)['\"]?$", text, re.MULTILINE)
        if not match:
            raise PeerError(f"kube: no metadata.name found in {path}")
        names.append(match.group(1))
    if not names:
        raise PeerError(f"kube: no CRDs under {directory}")
    return names


def _healthz_ok(url: str) -> bool:
    """/healthz of controller-manager or scheduler. Their serving certificates are
    self-signed in memory, so this one loopback probe does not verify them."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return _http_status(url, context=context)[0] == 200


def _condition(obj: dict[str, Any] | None, kind: str) -> bool:
    """Whether status condition ``kind`` of an API object is "True"."""
    if obj is None:
        return False
    conditions = obj.get("status", {}).get("conditions") or []
    return any(c.get("type") == kind and c.get("status") == "True" for c in conditions)


def _etcd_healthy(status: int, body: bytes) -> bool:
    if status != 200:
        return False
    try:
        return bool(json.loads(body).get("health") == "true")
    except ValueError:
        return False


def _http_status(
    url: str, *, token: str | None = None, context: ssl.SSLContext | None = None
) -> tuple[int, bytes]:
    """GET ``url``; (0, b"") when nothing answers yet."""
    request = urllib.request.Request(url)  # noqa: S310 - our own loopback URL
    if token and url.startswith("https://"):
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=2, context=context) as response:  # noqa: S310
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), b""
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return 0, b""
