"""How the Kubernetes connector parses the apiserver's answers: orjson, and the library's
own parse for what orjson refuses."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from kubernetes_asyncio import client as k8s_client

from remediator.connectors.kubernetes.client import _ApiClient


async def parsed(text: str, *, api_class: type[k8s_client.ApiClient] = _ApiClient) -> object:
    api = api_class(configuration=k8s_client.Configuration())
    try:
        # The response as the library hands it over: the body already decoded to text.
        return api.deserialize(cast(Any, SimpleNamespace(data=text)), "object")
    finally:
        await api.close()


async def test_an_answer_parses_to_the_same_document_as_the_library_would() -> None:
    text = '{"kind":"EventList","items":[{"count":3,"message":"é ✓","x":1.5e3,"y":null}]}'
    assert await parsed(text) == await parsed(text, api_class=k8s_client.ApiClient)
    assert await parsed(text) == {
        "kind": "EventList",
        "items": [{"count": 3, "message": "é ✓", "x": 1500.0, "y": None}],
    }


async def test_kubernetes_integers_stay_exact_and_what_orjson_refuses_goes_to_the_library() -> None:
    # The API's integers are int64 (generation, replicas, counts): exact both ways.
    extremes = {"generation": 2**63 - 1, "min": -(2**63), "unsigned": 2**64 - 1}
    text = '{"generation": 9223372036854775807, "min": -9223372036854775808,'
    assert await parsed(text + ' "unsigned": 18446744073709551615}') == extremes
    assert await parsed("not json") == "not json"
