"""Vendor errors are mapped at the boundary, naming the object and the API's message."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from remediator.connectors.kubernetes.client import KubeClient, PatchType, Ref, connect
from remediator.connectors.kubernetes.errors import (
    KubeAlreadyExists,
    KubeConflict,
    KubeError,
    KubeNotFound,
    KubeUnavailable,
)
from remediator.domain.errors import ConfigError, PermanentError, TemporaryError

pytestmark = pytest.mark.integration


def configmap(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}}


async def test_api_errors_map_to_domain_errors(kc: KubeClient, ns: str) -> None:
    ref = Ref("ConfigMap", ns, "cfg")
    with pytest.raises(KubeNotFound) as missing:
        await kc.get(ref)
    assert isinstance(missing.value, PermanentError)
    assert str(missing.value).startswith(f"ConfigMap {ns}/cfg: ")
    assert missing.value.status == 404

    created = await kc.create(ref, configmap("cfg"), dry_run=False)
    with pytest.raises(KubeAlreadyExists):
        await kc.create(ref, configmap("cfg"), dry_run=False)

    stale = created["metadata"]["resourceVersion"]
    await kc.replace(ref, {**created, "data": {"k": "2"}}, resource_version=stale, dry_run=False)
    with pytest.raises(KubeConflict) as conflict:
        await kc.replace(
            ref, {**created, "data": {"k": "3"}}, resource_version=stale, dry_run=False
        )
    assert not isinstance(conflict.value, KubeAlreadyExists)
    # JSON patches carry the precondition as an op; stale -> 409 too.
    with pytest.raises(KubeConflict):
        await kc.patch(
            ref,
            [{"op": "replace", "path": "/data/k", "value": "4"}],
            patch_type=PatchType.JSON,
            resource_version=stale,
            dry_run=False,
        )
    assert (await kc.get(ref))["data"] == {"k": "2"}

    bad = Ref("ConfigMap", ns, "Not_A_Valid_Name")
    with pytest.raises(KubeError) as invalid:
        await kc.create(bad, configmap("Not_A_Valid_Name"), dry_run=True)
    assert invalid.value.status == 422
    assert "Invalid" in str(invalid.value) and "Not_A_Valid_Name" in str(invalid.value)


async def test_unreachable_apiserver_is_temporary(kube: Any, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = yaml.safe_load(Path(kube.endpoints["kubeconfig"]).read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    async with await connect(kubeconfig=path, request_timeout=5) as client:
        with pytest.raises(KubeUnavailable) as down:
            await client.get(Ref("Deployment", "default", "web"))
    assert isinstance(down.value, TemporaryError)
    assert "Deployment default/web" in str(down.value)

    with pytest.raises(ConfigError):
        await connect(kubeconfig=tmp_path / "missing")
