"""helm v3 as an operator runs it: ``helm history -o json`` and ``helm rollback``.

The binary is run as a subprocess (asyncio) with an explicit kubeconfig, never
through a shell, and with an allow-listed environment (:mod:`childenv`): helm's own
``HELM_*`` and ``KUBECONFIG``, what in-cluster config and proxies need, never the
daemon's secrets. helm exits 1 for every failure, so errors are classified from its
stderr, which is kept verbatim in the raised error.

A release whose latest revision is ``pending-install``, ``pending-upgrade``,
``pending-rollback`` (or ``uninstalling``) is refused with :class:`HelmReleasePending`
before anything is run: either another helm is working on it right now, or one was
killed mid-way. helm 3 itself would happily roll such a release back; whether that is
safe only a human can tell, so the executor maps this error to ``needs_human``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from remediator.connectors.childenv import child_env
from remediator.domain.errors import PermanentError, TemporaryError

__all__ = [
    "Helm",
    "HelmError",
    "HelmReleaseNotFound",
    "HelmReleasePending",
    "HelmRevision",
    "HelmRollbackFailed",
    "HelmRollbackResult",
    "HelmUnavailable",
]

IN_PROGRESS = frozenset({"pending-install", "pending-upgrade", "pending-rollback", "uninstalling"})
_RELEASE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
# stderr fragments that mean "the cluster could not be reached / answered badly".
_TEMPORARY = (
    "kubernetes cluster unreachable",
    "connection refused",
    "connection reset",
    "i/o timeout",
    "tls handshake timeout",
    "no route to host",
    "the server is currently unable to handle the request",
    "the server was unable to return a response",
    "etcdserver: request timed out",
    "too many requests",
    "http2: client connection lost",
    "unexpected eof",
)
# Kill grace: how long past helm's own --timeout before we stop waiting for it.
_EXIT_GRACE = 60.0
# Inherited by helm beyond the common variables: where the cluster is (kubeconfig, or
# in-cluster config, which client-go finds through KUBERNETES_SERVICE_*), how to reach
# it (proxies, CA bundles), and helm's own configuration (HELM_CACHE_HOME ...).
HELM_PASSED = frozenset(
    {
        "KUBECONFIG",
        "KUBERNETES_SERVICE_HOST",
        "KUBERNETES_SERVICE_PORT",
        "HTTPS_PROXY",
        "HTTP_PROXY",
        "NO_PROXY",
        "https_proxy",
        "http_proxy",
        "no_proxy",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
    }
)
HELM_PASSED_PREFIXES = ("HELM_",)


class HelmError(PermanentError):
    """helm failed for good; ``stderr`` is helm's own text."""

    def __init__(self, message: str, *, release: str, namespace: str, stderr: str = "") -> None:
        super().__init__(f"helm release {namespace}/{release}: {message}")
        self.release = release
        self.namespace = namespace
        self.stderr = stderr


class HelmReleaseNotFound(HelmError):
    """No such release in that namespace (or no such revision)."""


class HelmReleasePending(HelmError):
    """Latest revision is pending-*/uninstalling: needs a human, never auto-fixed."""

    def __init__(self, message: str, *, release: str, namespace: str, status: str) -> None:
        super().__init__(message, release=release, namespace=namespace)
        self.status = status


class HelmRollbackFailed(HelmError):
    """helm ran the rollback but it failed (e.g. --wait timed out): verify, then escalate."""


class HelmUnavailable(TemporaryError):
    """The cluster or helm could not be reached right now; safe to retry later."""

    def __init__(self, message: str, *, stderr: str = "", delay: float = 10.0) -> None:
        super().__init__(message, delay=delay)
        self.stderr = stderr


@dataclass(frozen=True, slots=True, kw_only=True)
class HelmRevision:
    revision: int
    updated: datetime | None
    status: str  # deployed | superseded | failed | pending-* | uninstalled | ...
    chart: str
    app_version: str
    description: str

    @property
    def in_progress(self) -> bool:
        return self.status in IN_PROGRESS


@dataclass(frozen=True, slots=True, kw_only=True)
class HelmRollbackResult:
    release: str
    namespace: str
    from_revision: int  # latest revision before the rollback
    to_revision: int  # the revision whose chart and values were restored
    new_revision: int | None  # the revision helm created (None on dry run)
    status: str | None  # its status ("deployed" on success; None on dry run)
    dry_run: bool
    output: str  # helm's stdout


class Helm:
    """``helm`` bound to one binary and kubeconfig (context optional)."""

    def __init__(
        self,
        *,
        binary: Path,
        kubeconfig: Path | None,
        kube_context: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._binary = binary
        self._kubeconfig = kubeconfig
        self._context = kube_context
        self._env = dict(env or {})

    async def history(self, *, release: str, namespace: str) -> list[HelmRevision]:
        """Stored revisions, oldest first (``helm history -o json``: the newest 256)."""
        _check_name(release)
        out = await self._run(
            ["history", release, f"--namespace={namespace}", "--output=json"],
            release=release,
            namespace=namespace,
            timeout_seconds=60.0,
        )
        try:
            rows: Any = json.loads(out)
        except ValueError as exc:
            raise HelmError(
                f"unreadable history output: {out[:200]!r}", release=release, namespace=namespace
            ) from exc
        return sorted((_revision(row) for row in rows or []), key=lambda r: r.revision)

    async def rollback(
        self,
        *,
        release: str,
        namespace: str,
        revision: int | None,
        wait: bool = True,
        timeout_seconds: float,
        dry_run: bool,
    ) -> HelmRollbackResult:
        """``helm rollback RELEASE [REVISION] [--wait] --timeout Ns [--dry-run]``.

        ``revision`` None is helm's default: the revision before the latest one.
        """
        if revision is not None and revision <= 0:
            raise ValueError(f"revision must be positive, got {revision}")
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        history = await self.history(release=release, namespace=namespace)
        if not history:
            raise HelmReleaseNotFound("no revisions", release=release, namespace=namespace)
        latest = history[-1]
        if latest.in_progress:
            raise HelmReleasePending(
                f"latest revision {latest.revision} is {latest.status}: another helm operation "
                "is running or was interrupted; a human must decide",
                release=release,
                namespace=namespace,
                status=latest.status,
            )
        target = revision if revision is not None else latest.revision - 1
        if target not in {r.revision for r in history}:
            raise HelmReleaseNotFound(
                f"release has no revision {target} "
                f"(known: {', '.join(str(r.revision) for r in history)})",
                release=release,
                namespace=namespace,
            )
        if target == latest.revision:
            raise HelmError(
                f"revision {target} is already the latest", release=release, namespace=namespace
            )
        argv = [
            "rollback",
            release,
            str(target),
            f"--namespace={namespace}",
            f"--timeout={int(timeout_seconds)}s",
        ]
        if wait:
            argv.append("--wait")
        if dry_run:
            argv.append("--dry-run")
        out = await self._run(
            argv,
            release=release,
            namespace=namespace,
            timeout_seconds=timeout_seconds + _EXIT_GRACE,
            failure=HelmRollbackFailed,
        )
        new_revision: int | None = None
        status: str | None = None
        if not dry_run:
            after = await self.history(release=release, namespace=namespace)
            new_revision, status = after[-1].revision, after[-1].status
        return HelmRollbackResult(
            release=release,
            namespace=namespace,
            from_revision=latest.revision,
            to_revision=target,
            new_revision=new_revision,
            status=status,
            dry_run=dry_run,
            output=out.strip(),
        )

    # -- process ---------------------------------------------------------------------
    async def _run(
        self,
        args: Sequence[str],
        *,
        release: str,
        namespace: str,
        timeout_seconds: float,
        failure: type[HelmError] = HelmError,
    ) -> str:
        argv = [str(self._binary), *args]
        if self._kubeconfig is not None:
            argv.append(f"--kubeconfig={self._kubeconfig}")
        if self._context:
            argv.append(f"--kube-context={self._context}")
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=child_env(self._env, passed=HELM_PASSED, passed_prefixes=HELM_PASSED_PREFIXES),
            )
        except OSError as exc:
            raise HelmError(
                f"cannot run {self._binary}: {exc}", release=release, namespace=namespace
            ) from exc
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout_seconds)
        except TimeoutError as exc:
            # Killing helm mid-operation can leave the release pending-*; that is a
            # state for a human, so say so rather than suggesting a retry.
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise HelmReleasePending(
                f"helm {args[0]} did not exit within {timeout_seconds:g}s and was killed; "
                "the release may be left pending",
                release=release,
                namespace=namespace,
                status="unknown",
            ) from exc
        err = stderr.decode("utf-8", "replace").strip()
        if proc.returncode == 0:
            return stdout.decode("utf-8", "replace")
        raise _classify(
            err, code=proc.returncode, release=release, namespace=namespace, failure=failure
        )


def _classify(
    stderr: str, *, code: int | None, release: str, namespace: str, failure: type[HelmError]
) -> Exception:
    text = stderr.lower()
    message = f"helm exited {code}: {stderr}"
    if "another operation (install/upgrade/rollback) is in progress" in text:
        return HelmReleasePending(message, release=release, namespace=namespace, status="unknown")
    if "release: not found" in text or re.search(r"release has no \d+ version", text):
        return HelmReleaseNotFound(message, release=release, namespace=namespace, stderr=stderr)
    if any(fragment in text for fragment in _TEMPORARY):
        return HelmUnavailable(f"helm release {namespace}/{release}: {message}", stderr=stderr)
    return failure(message, release=release, namespace=namespace, stderr=stderr)


def _check_name(release: str) -> None:
    # Also keeps anything that looks like a flag out of helm's argv.
    if not _RELEASE_NAME.match(release) or len(release) > 53:
        raise ValueError(f"invalid helm release name {release!r}")


def _revision(row: Mapping[str, Any]) -> HelmRevision:
    return HelmRevision(
        revision=int(row["revision"]),
        updated=_parse_time(row.get("updated")),
        status=str(row.get("status", "")),
        chart=str(row.get("chart", "")),
        app_version=str(row.get("app_version", "")),
        description=str(row.get("description", "")),
    )


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    # helm writes Go's RFC 3339 with nanoseconds; Python takes at most microseconds.
    trimmed = re.sub(r"(\.\d{6})\d+", r"\1", value).replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(trimmed)
    except ValueError:
        return None
