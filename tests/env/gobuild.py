"""Build the Go peers (Kubernetes control plane, etcd, kwok, helm) from the Go module proxy.

Each component lands in ``cache_root()/<component>-<version>/``, with its binaries in
``bin/`` and a ``.complete`` stamp. A build happens in a temporary sibling directory that
is renamed into place only when everything succeeded, so a killed build never leaves a
half cache. Go's own module and build caches stay in their global default places, which
is what makes a rebuild after a version bump of one component cheap.

Run ``python -m tests.env.gobuild`` to build everything ahead of a test run.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.env import versions
from tests.env.base import PeerError, Progress, cache_root, default_progress, run_checked

STAMP = ".complete"


@dataclass(frozen=True)
class GoComponent:
    """One cache entry: the main packages of one module at one version."""

    name: str
    version: str
    module: str
    packages: tuple[str, ...]
    binaries: tuple[str, ...]
    ldflags: tuple[str, ...] = ()
    # Extra go.mod lines for the wrapper module (replace directives), computed lazily
    # because computing them may itself download something.
    replaces: Callable[[Progress], list[str]] | None = None

    @property
    def dir(self) -> Path:
        return cache_root() / f"{self.name}-{self.version}"

    @property
    def bin_dir(self) -> Path:
        return self.dir / "bin"

    def binary(self, name: str) -> Path:
        return self.bin_dir / name

    def is_built(self) -> bool:
        return (self.dir / STAMP).is_file() and all(
            (self.bin_dir / b).is_file() for b in self.binaries
        )


def go_env() -> dict[str, str]:
    env = dict(os.environ)
    # Static binaries that run anywhere; the local toolchain only (never fetch another).
    env.update(CGO_ENABLED="0", GOTOOLCHAIN="local", GOFLAGS="-mod=mod -buildvcs=false")
    env.pop("GOWORK", None)
    return env


def _go_mod_download(module: str, version: str, progress: Progress) -> dict[str, str]:
    """Download one module (outside any main module) and return go's JSON about it."""
    cache_root().mkdir(parents=True, exist_ok=True)
    out = run_checked(
        ["go", "mod", "download", "-json", f"{module}@{version}"],
        what=f"go mod download {module}@{version}",
        cwd=cache_root(),
        env=go_env(),
        progress=progress,
    )
    info: dict[str, str] = json.loads(out)
    if info.get("Error"):
        raise PeerError(f"go mod download {module}@{version}: {info['Error']}")
    return info


def kubernetes_staging_replaces(progress: Progress) -> list[str]:
    """Point each ``k8s.io/*`` staging module at its published ``v0.<minor>.<patch>``.

    k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with
    ``./staging/...``; replace directives of a dependency are ignored, so the wrapper
    module has to say where they come from. The list is read from that release's go.mod.
    """
    info = _go_mod_download("k8s.io/kubernetes", versions.KUBERNETES, progress)
    staging_version = "v0." + versions.KUBERNETES.removeprefix("v1.")
    lines = []
    for raw in Path(info["GoMod"]).read_text().splitlines():
        parts = raw.split()
        if len(parts) == 3 and parts[1] == "=>" and parts[2].startswith("./staging/"):
            module = parts[0]
            # The sample-* modules are examples that nothing we build imports, and
            # some are not published for every release.
            if module.startswith("k8s.io/sample-"):
                continue
            lines.append(f"replace {module} => {module} {staging_version}")
    if not lines:
        raise PeerError(f"no staging replaces found in {info['GoMod']}")
    return lines


def _kube_ldflags() -> tuple[str, ...]:
    major, minor = versions.KUBERNETES.removeprefix("v").split(".")[:2]
    flags = []
    # Without these /version and `kubectl version` report v0.0.0-master.
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={versions.KUBERNETES}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
            # Else "$Format:%H$", the unexpanded git-archive placeholder.
            f"-X {pkg}.gitCommit=",
        ]
    return tuple(flags)


KUBE_BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")

KUBERNETES = GoComponent(
    name="kubernetes",
    version=versions.KUBERNETES,
    module="k8s.io/kubernetes",
    packages=tuple(f"k8s.io/kubernetes/cmd/{b}" for b in KUBE_BINARIES),
    binaries=KUBE_BINARIES,
    ldflags=_kube_ldflags(),
    replaces=kubernetes_staging_replaces,
)

# The server module's relative replaces (../api, ../client/...) are ignored in a wrapper;
# it requires the published sibling modules at the same version, which is what we want.
ETCD = GoComponent(
    name="etcd",
    version=versions.ETCD,
    module="go.etcd.io/etcd/server/v3",
    packages=("go.etcd.io/etcd/server/v3",),
    binaries=("etcd",),
)

KWOK = GoComponent(
    name="kwok",
    version=versions.KWOK,
    module="sigs.k8s.io/kwok",
    packages=("sigs.k8s.io/kwok/cmd/kwok",),
    binaries=("kwok",),
    ldflags=(f"-X sigs.k8s.io/kwok/pkg/consts.Version={versions.KWOK.removeprefix('v')}",),
)

HELM = GoComponent(
    name="helm",
    version=versions.HELM,
    module="helm.sh/helm/v3",
    packages=("helm.sh/helm/v3/cmd/helm",),
    binaries=("helm",),
    # The source says "v3.19"; the release Makefile stamps the full version.
    ldflags=(f"-X helm.sh/helm/v3/internal/version.version={versions.HELM}",),
)

GO_COMPONENTS = (ETCD, KUBERNETES, KWOK, HELM)


@contextlib.contextmanager
def _build_lock(key: str) -> Iterator[None]:
    """Serialise builds of one cache entry across processes (CLI and pytest at once)."""
    cache_root().mkdir(parents=True, exist_ok=True)
    with (cache_root() / f".{key}.lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _commit(tmp: Path, final: Path) -> None:
    """Replace ``final`` by ``tmp`` with a rename, the only step that makes a build visible."""
    if final.exists():
        # A stale or unfinished entry (no stamp): move it aside first, then delete.
        trash = final.with_name(f".{final.name}.old-{os.getpid()}")
        final.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)
    tmp.rename(final)


def _fresh_tmp(final: Path) -> Path:
    """A new build directory beside ``final``; call with the build lock held.

    Holding the lock means no other build of this entry runs, so any other temporary
    directory of it is what a killed build left behind.
    """
    for stale in final.parent.glob(f".{final.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    tmp.mkdir(parents=True)
    return tmp


def build_go(component: GoComponent, progress: Progress = default_progress) -> Path:
    """Build ``component`` into the cache unless it is already there; return its bin dir."""
    if component.is_built():
        return component.bin_dir
    key = f"{component.name}-{component.version}"
    with _build_lock(key):
        if component.is_built():  # another process finished it while we waited
            return component.bin_dir
        started = time.monotonic()
        progress(f"building {key} ({', '.join(component.binaries)})")
        tmp = _fresh_tmp(component.dir)
        try:
            src = tmp / "src"
            src.mkdir()
            mod_lines = [f"module remediator.test/build/{component.name}", "", "go 1.26", ""]
            if component.replaces is not None:
                mod_lines += component.replaces(progress)
            (src / "go.mod").write_text("\n".join(mod_lines) + "\n")
            env = go_env()
            # `go get` of the main packages records exactly the go.sum entries the build needs.
            run_checked(
                ["go", "get", *(f"{p}@{component.version}" for p in component.packages)],
                what=f"go get for {key}",
                cwd=src,
                env=env,
                progress=progress,
            )
            progress(f"{key}: modules resolved after {time.monotonic() - started:.0f}s; compiling")
            ldflags = " ".join(("-s", "-w", *component.ldflags))
            # One `go build -o <file>` per binary: the default name of a module-root main
            # package like go.etcd.io/etcd/server/v3 would be "server", not "etcd".
            for package, binary in zip(component.packages, component.binaries, strict=True):
                output = str(tmp / "bin" / binary)
                run_checked(
                    ["go", "build", "-trimpath", "-ldflags", ldflags, "-o", output, package],
                    what=f"go build for {key}",
                    cwd=src,
                    env=env,
                    progress=progress,
                )
                progress(f"{key}: {binary} done after {time.monotonic() - started:.0f}s")
            missing = [b for b in component.binaries if not (tmp / "bin" / b).is_file()]
            if missing:
                raise PeerError(f"go build for {key} produced no {', '.join(missing)}")
            elapsed = time.monotonic() - started
            (tmp / STAMP).write_text(
                json.dumps(
                    {
                        "component": component.name,
                        "version": component.version,
                        "go": _go_version(),
                        "build_seconds": round(elapsed, 1),
                        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    },
                    indent=2,
                )
                + "\n"
            )
            _commit(tmp, component.dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        progress(f"built {key} in {elapsed:.0f}s")
    return component.bin_dir


def _go_version() -> str:
    try:
        return subprocess.run(
            ["go", "env", "GOVERSION"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def gateway_api_crds_dir() -> Path:
    return cache_root() / f"gateway-api-{versions.GATEWAY_API}" / "crds"


def build_gateway_api_crds(progress: Progress = default_progress) -> Path:
    """Copy the Gateway API *standard* CRDs (HTTPRoute with backendRef weights) into the cache.

    The YAML comes from the module source of sigs.k8s.io/gateway-api, so it is exactly
    the released channel file set for that version.
    """
    final = gateway_api_crds_dir().parent
    if (final / STAMP).is_file() and any(gateway_api_crds_dir().glob("*.yaml")):
        return gateway_api_crds_dir()
    key = f"gateway-api-{versions.GATEWAY_API}"
    with _build_lock(key):
        if (final / STAMP).is_file():
            return gateway_api_crds_dir()
        started = time.monotonic()
        progress(f"fetching {key} CRDs")
        info = _go_mod_download("sigs.k8s.io/gateway-api", versions.GATEWAY_API, progress)
        source = Path(info["Dir"]) / "config" / "crd" / "standard"
        files = sorted(source.glob("*.yaml"))
        if not files:
            raise PeerError(f"no CRD YAML under {source}")
        tmp = _fresh_tmp(final)
        try:
            (tmp / "crds").mkdir()
            for f in files:
                # Module cache files are read-only; copy the bytes, not the mode.
                (tmp / "crds" / f.name).write_bytes(f.read_bytes())
            (tmp / STAMP).write_text(json.dumps({"version": versions.GATEWAY_API}) + "\n")
            _commit(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        progress(f"{key}: {len(files)} CRD files in {time.monotonic() - started:.0f}s")
    return gateway_api_crds_dir()


def build_all(progress: Progress = default_progress) -> None:
    for component in GO_COMPONENTS:
        build_go(component, progress)
    build_gateway_api_crds(progress)


if __name__ == "__main__":
    build_all()
