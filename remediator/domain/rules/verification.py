"""Which expression tells that a signal's condition has cleared, and where it came from.

An alert says *that* something is wrong, never *what* to do: the expression decides
nothing but whether a change counts as done, and is only ever evaluated read-only
against the configured Prometheus. The rule pack's own expression (trusted config) wins;
otherwise the expression of the alert's rule, which Prometheus puts in the alert's
``generatorURL`` (``g0.expr=``), is used, bounded in length. Nothing else (a Kafka event,
a person's request) can supply one.
"""

from __future__ import annotations

import functools
from urllib.parse import parse_qs, urlsplit

from remediator.domain.rules.model import Rule, ServiceSpec
from remediator.domain.signals import Signal, Source
from remediator.domain.steps import (
    MAX_CONDITION_QUERY_CHARS,
    ConditionOrigin,
    VerifyConditionParams,
)

GENERATOR_EXPR_PARAM = "g0.expr"


@functools.lru_cache(maxsize=256)
def expression_from_generator_url(url: str | None) -> str | None:
    """The PromQL expression a Prometheus ``generatorURL`` carries, or None.

    Cached: a storm's alerts share their rule's URL, and a plan is built for each."""
    if not url or len(url) > 4 * MAX_CONDITION_QUERY_CHARS:
        return None
    try:
        query = urlsplit(url).query
    except ValueError:
        return None
    values = parse_qs(query).get(GENERATOR_EXPR_PARAM) or []
    expression = values[0].strip() if len(values) == 1 else ""
    if not expression or len(expression) > MAX_CONDITION_QUERY_CHARS:
        return None
    return expression


def condition_params(
    *, rule: Rule, signal: Signal, service: str, spec: ServiceSpec
) -> VerifyConditionParams:
    """What the condition check of a plan for ``signal`` evaluates, and for how long."""
    namespace = spec.namespace
    query: str | None = None
    origin: ConditionOrigin = "none"
    note = ""
    if rule.verify.query is not None:
        # Catalog names are DNS-1123: safe inside a PromQL string literal.
        query = rule.verify.query.replace("$service", service).replace("$namespace", namespace)
        origin = "rule"
    elif signal.source is Source.ALERTMANAGER:
        query = expression_from_generator_url(str(signal.raw.get("generatorURL") or ""))
        origin = "alert" if query is not None else "none"
        if query is None:
            note = "the alert's generatorURL carries no usable expression (g0.expr)"
    else:
        note = f"a {signal.source.value} signal carries no expression"
    if query is None:
        note = f"{note}, and rule {rule.name} sets no verify.query"
    return VerifyConditionParams(
        namespace=namespace,
        service=service,
        query=query,
        origin=origin,
        window_seconds=max(int(rule.verify.window.total_seconds()), 1),
        match_labels={"service": service, "namespace": namespace},
        note=note,
    )
