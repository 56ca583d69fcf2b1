"""A thin, dict-based Kubernetes REST client with one place for error mapping.

``kubernetes_asyncio`` supplies configuration, authentication and TLS; requests go
through its generic ``call_api`` with plain JSON dicts, so every action sees objects
exactly as ``kubectl get -o json`` shows them and can send JSON / merge / strategic
patches byte for byte like kubectl does.

Rules every mutating method enforces:

* it names one exact object (:class:`Ref`), never a collection or a selector;
* it carries a ``resourceVersion`` precondition (optimistic concurrency), except
  ``create``, which is guarded by AlreadyExists instead;
* it takes ``dry_run`` and then sends ``dryRun=All`` (server-side dry run: admission
  and validation run, nothing is persisted).
"""

from __future__ import annotations

import enum
import json
import os
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiohttp
import orjson
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config.config_exception import ConfigException

from remediator.connectors.kubernetes.errors import (
    KubeAlreadyExists,
    KubeConflict,
    KubeError,
    KubeNotFound,
    KubeUnavailable,
)
from remediator.domain.errors import ConfigError

__all__ = ["FIELD_MANAGER", "KubeClient", "PatchType", "Ref", "connect"]

FIELD_MANAGER = "remediator"
DEFAULT_REQUEST_TIMEOUT = 30.0
_IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")

# kind -> (API prefix, plural); only what the actions touch.
_KINDS: dict[str, tuple[str, str]] = {
    "ConfigMap": ("/api/v1", "configmaps"),
    "Deployment": ("/apis/apps/v1", "deployments"),
    "EndpointSlice": ("/apis/discovery.k8s.io/v1", "endpointslices"),
    "Event": ("/api/v1", "events"),  # read for the record's evidence
    "HorizontalPodAutoscaler": ("/apis/autoscaling/v2", "horizontalpodautoscalers"),
    "HTTPRoute": ("/apis/gateway.networking.k8s.io/v1", "httproutes"),
    "Lease": ("/apis/coordination.k8s.io/v1", "leases"),
    "Pod": ("/api/v1", "pods"),
    "ReplicaSet": ("/apis/apps/v1", "replicasets"),
    "Service": ("/api/v1", "services"),
}


class PatchType(enum.Enum):
    JSON = "application/json-patch+json"
    MERGE = "application/merge-patch+json"
    STRATEGIC = "application/strategic-merge-patch+json"


@dataclass(frozen=True, slots=True)
class Ref:
    """One namespaced object (``name`` set) or one namespaced collection (``name`` None)."""

    kind: str
    namespace: str
    name: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unsupported kind {self.kind!r}")
        if not self.namespace or self.name == "":
            raise ValueError(f"{self.kind}: namespace and name must be non-empty")

    @property
    def path(self) -> str:
        prefix, plural = _KINDS[self.kind]
        base = f"{prefix}/namespaces/{self.namespace}/{plural}"
        return base if self.name is None else f"{base}/{self.name}"

    def named(self, name: str) -> Ref:
        return Ref(self.kind, self.namespace, name)

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name or '*'}"


class KubeClient:
    """Owns one aiohttp session to the apiserver; close it (or use ``async with``)."""

    def __init__(
        self, api: k8s_client.ApiClient, *, request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    ) -> None:
        self._api = api
        self._timeout = request_timeout

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._api.close()

    @property
    def api(self) -> k8s_client.ApiClient:
        """The ApiClient underneath, for what this client does not wrap (Jobs, Secrets, pod
        logs: remediator.connectors.kubernetes.jobrunner). Closed with this client."""
        return self._api

    # -- reads -----------------------------------------------------------------------
    async def get(self, ref: Ref, *, subresource: str | None = None) -> dict[str, Any]:
        _require_name(ref)
        return await self._call("GET", ref, subresource=subresource)

    async def list_all(
        self, ref: Ref, *, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        """Every item of a collection (follows ``continue`` tokens)."""
        items: list[dict[str, Any]] = []
        async for page in self.pages(ref, label_selector=label_selector):
            items.extend(page)
        return items

    async def pages(
        self, ref: Ref, *, label_selector: str | None = None, page_size: int = 500
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        """A collection one page at a time, so a caller that keeps only some items holds
        one page in memory, and may stop early."""
        if ref.name is not None:
            raise ValueError(f"list needs a collection, got {ref}")
        token: str | None = None
        while True:
            query: list[tuple[str, str]] = [("limit", str(page_size))]
            if label_selector:
                query.append(("labelSelector", label_selector))
            if token:
                query.append(("continue", token))
            page = await self._call("GET", ref, query=query)
            yield list(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return

    # -- writes ----------------------------------------------------------------------
    async def create(self, ref: Ref, body: Mapping[str, Any], *, dry_run: bool) -> dict[str, Any]:
        """POST ``body`` (whose metadata.name must be ``ref.name``) to the collection."""
        _require_name(ref)
        name = (body.get("metadata") or {}).get("name")
        if name != ref.name:
            raise ValueError(f"create {ref}: body names {name!r}")
        collection = Ref(ref.kind, ref.namespace)
        return await self._call(
            "POST", collection, body=dict(body), dry_run=dry_run, write=True, target=ref
        )

    async def replace(
        self, ref: Ref, body: Mapping[str, Any], *, resource_version: str, dry_run: bool
    ) -> dict[str, Any]:
        """PUT the whole object; KubeConflict unless it is still at ``resource_version``."""
        _require_name(ref)
        _require_rv(ref, resource_version)
        meta = dict(body.get("metadata") or {})
        if meta.get("name") != ref.name:
            raise ValueError(f"replace {ref}: body names {meta.get('name')!r}")
        meta["resourceVersion"] = resource_version
        return await self._call(
            "PUT", ref, body={**body, "metadata": meta}, dry_run=dry_run, write=True
        )

    async def patch(
        self,
        ref: Ref,
        patch: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        patch_type: PatchType,
        resource_version: str,
        dry_run: bool,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        """Patch with a resourceVersion precondition built into the patch itself.

        For merge and strategic patches ``metadata.resourceVersion`` goes into the
        body; for JSON patches an op sets it. Either way the apiserver compares it
        with the stored object and answers 409 Conflict when they differ.
        """
        _require_name(ref)
        _require_rv(ref, resource_version)
        body: Any
        if patch_type is PatchType.JSON:
            if not isinstance(patch, Sequence):
                raise TypeError("a JSON patch is a list of operations")
            rv_op = {
                "op": "replace",
                "path": "/metadata/resourceVersion",
                "value": resource_version,
            }
            body = [rv_op, *(dict(op) for op in patch)]
        else:
            if not isinstance(patch, Mapping):
                raise TypeError("a merge or strategic patch is an object")
            meta = {**(patch.get("metadata") or {}), "resourceVersion": resource_version}
            body = {**patch, "metadata": meta}
        return await self._call(
            "PATCH",
            ref,
            body=body,
            content_type=patch_type.value,
            dry_run=dry_run,
            write=True,
            subresource=subresource,
        )

    async def delete(self, ref: Ref, *, resource_version: str, dry_run: bool) -> None:
        _require_name(ref)
        _require_rv(ref, resource_version)
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "preconditions": {"resourceVersion": resource_version},
        }
        if dry_run:
            body["dryRun"] = ["All"]
        await self._call("DELETE", ref, body=body)

    # -- transport -------------------------------------------------------------------
    async def _call(
        self,
        method: str,
        ref: Ref,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        dry_run: bool = False,
        write: bool = False,
        subresource: str | None = None,
        target: Ref | None = None,
    ) -> dict[str, Any]:
        params = list(query or [])
        if write:
            params.append(("fieldManager", FIELD_MANAGER))
            if dry_run:
                params.append(("dryRun", "All"))
        path = ref.path + (f"/{subresource}" if subresource else "")
        what = str(target or ref) + (f" ({subresource})" if subresource else "")
        try:
            result = await self._api.call_api(
                path,
                method,
                query_params=params,
                header_params={"Content-Type": content_type, "Accept": "application/json"},
                body=body,
                response_types_map={200: "object", 201: "object", 202: "object"},
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _request_timeout=self._timeout,
            )
        except ApiException as exc:
            raise _map_api_exception(exc, what) from exc
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise KubeUnavailable(
                f"{method} failed: {type(exc).__name__}: {exc}", target=what
            ) from exc
        if not isinstance(result, dict):
            # DELETE of some kinds answers a Status; callers ignore it.
            return {}
        return result


def _require_name(ref: Ref) -> None:
    if ref.name is None:
        raise ValueError(f"{ref.kind}: an exact object name is required")


def _require_rv(ref: Ref, resource_version: str) -> None:
    if not resource_version:
        raise ValueError(f"{ref}: a resourceVersion precondition is required")


def _map_api_exception(exc: ApiException, what: str) -> Exception:
    status = int(exc.status or 0)
    message, reason = _status_message(exc)
    if status == 409:
        cls = KubeAlreadyExists if reason == "AlreadyExists" else KubeConflict
        return cls(message, target=what, status=status)
    if status == 404:
        return KubeNotFound(message or "not found", target=what, status=status)
    if status == 429 or status >= 500 or status == 0:
        delay = _retry_after(exc)
        return KubeUnavailable(f"HTTP {status}: {message}", target=what, delay=delay)
    return KubeError(f"HTTP {status} {reason}: {message}", target=what, status=status)


def _status_message(exc: ApiException) -> tuple[str, str]:
    """The apiserver's Status ``message`` and ``reason``, else the raw body."""
    raw = exc.body
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw or "")
    try:
        status = json.loads(text)
    except ValueError:
        return text.strip() or str(exc.reason or ""), str(exc.reason or "")
    if not isinstance(status, dict):
        return text.strip(), str(exc.reason or "")
    return str(status.get("message") or exc.reason or ""), str(status.get("reason") or "")


def _retry_after(exc: ApiException) -> float:
    headers: Mapping[str, str] = exc.headers or {}
    try:
        return max(1.0, float(headers.get("Retry-After", "2")))
    except (TypeError, ValueError):
        return 2.0


async def connect(
    *,
    kubeconfig: Path | None,
    context: str | None = None,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
) -> KubeClient:
    """A client for the cluster: in-cluster config when running in a pod (and no
    kubeconfig is given), else ``kubeconfig``, else ``$KUBECONFIG`` / ``~/.kube/config``.
    """
    configuration = k8s_client.Configuration()
    try:
        if kubeconfig is None and _in_cluster():
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            path = kubeconfig or Path(
                os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or "~/.kube/config"
            )
            if not path.expanduser().is_file():
                # The library would report a missing file as a malformed one.
                raise ConfigError(
                    f"kubernetes: no kubeconfig at {path} and not running in a cluster "
                    "(set --kubeconfig or REMEDIATOR_KUBERNETES__KUBECONFIG)"
                )
            await k8s_config.load_kube_config(
                config_file=str(path.expanduser()),
                context=context,
                client_configuration=configuration,
                persist_config=False,
            )
    except (ConfigException, OSError) as exc:
        raise ConfigError(f"kubernetes: cannot load client configuration: {exc}") from exc
    return KubeClient(_ApiClient(configuration=configuration), request_timeout=request_timeout)


class _ApiClient(k8s_client.ApiClient):
    """The library's client, parsing responses with orjson instead of the standard
    library's json: that parse was some 40 % of the daemon's CPU while 200 rollbacks each
    listed their namespace's Events for the record (bench/first_write.py)."""

    def deserialize(self, response: Any, response_type: Any) -> Any:
        if response_type == "object":  # every KubeClient call (response_types_map)
            try:
                return orjson.loads(response.data)
            except orjson.JSONDecodeError:
                pass  # not JSON: the library answers with the text itself
        return super().deserialize(response, response_type)


def _in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and _IN_CLUSTER_TOKEN.is_file()
