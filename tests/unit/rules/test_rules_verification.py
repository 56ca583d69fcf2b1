"""Which expression a plan's condition check evaluates: the rule's, or the alert's own."""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import quote

import pytest

from remediator.domain.rules import RulePack
from remediator.domain.rules.model import Rule
from remediator.domain.rules.verification import condition_params, expression_from_generator_url
from remediator.domain.signals import Signal
from remediator.domain.steps import MAX_CONDITION_QUERY_CHARS

from .conftest import alert, event, manual

EXPR = 'sum(rate(http_requests_total{code=~"5.."}[5m])) by (service) > 0.05'
PROMETHEUS = "http://prometheus.example:9090/graph"


def generator_url(expr: str, *, extra: str = "&g0.tab=1") -> str:
    return f"{PROMETHEUS}?g0.expr={quote(expr, safe='')}{extra}"


def rule(**verify: Any) -> Rule:
    return Rule.model_validate(
        {
            "name": "errors",
            "match": {"source": "alertmanager", "kinds": ["HighErrorRate"]},
            "action": "rollback",
            "verify": verify,
        }
    )


def with_url(signal: Signal, url: str | None) -> Signal:
    raw: dict[str, Any] = {} if url is None else {"generatorURL": url}
    return dataclasses.replace(signal, raw=raw)


# --- the expression in a generatorURL ------------------------------------------------------


def test_the_url_encoded_expression_is_decoded() -> None:
    assert expression_from_generator_url(generator_url(EXPR)) == EXPR


def test_plus_signs_decode_as_spaces_like_prometheus_writes_them() -> None:
    url = f"{PROMETHEUS}?g0.expr=up+%3D%3D+0&g0.tab=1"
    assert expression_from_generator_url(url) == "up == 0"


@pytest.mark.parametrize(
    "url",
    [
        None,
        "",
        PROMETHEUS,  # no query at all
        f"{PROMETHEUS}?g0.tab=1",  # a query without the expression
        f"{PROMETHEUS}?g0.expr=",  # an empty expression
        f"{PROMETHEUS}?g0.expr=%20%20",  # only blanks
        f"{PROMETHEUS}?g1.expr=up",  # another panel's, not the alert's
        # Two expressions: which one the alert meant is not known.
        f"{PROMETHEUS}?g0.expr=up&g0.expr=down",
    ],
)
def test_no_usable_expression(url: str | None) -> None:
    assert expression_from_generator_url(url) is None


def test_an_expression_at_the_limit_is_kept_and_one_over_it_dropped() -> None:
    at_limit = "x" * MAX_CONDITION_QUERY_CHARS
    assert MAX_CONDITION_QUERY_CHARS == 4096
    assert expression_from_generator_url(generator_url(at_limit)) == at_limit
    assert expression_from_generator_url(generator_url(at_limit + "x")) is None


def test_an_absurdly_long_url_is_not_parsed() -> None:
    url = generator_url("up", extra="&pad=" + "y" * (4 * MAX_CONDITION_QUERY_CHARS))
    assert expression_from_generator_url(url) is None


# --- choosing the expression ----------------------------------------------------------------


def test_the_rules_query_wins_with_service_and_namespace_filled_in(pack: RulePack) -> None:
    spec = pack.services["checkout"]
    params = condition_params(
        rule=rule(query='up{service="$service",namespace="$namespace"} == 0', window="3m"),
        signal=with_url(alert("HighErrorRate"), generator_url(EXPR)),
        service="checkout",
        spec=spec,
    )
    assert params.query == f'up{{service="checkout",namespace="{spec.namespace}"}} == 0'
    assert params.origin == "rule"
    assert params.window_seconds == 180
    assert params.match_labels == {"service": "checkout", "namespace": spec.namespace}
    assert params.note == ""


def test_without_a_rule_query_the_alerts_expression_is_used(pack: RulePack) -> None:
    params = condition_params(
        rule=rule(),
        signal=with_url(alert("HighErrorRate"), generator_url(EXPR)),
        service="checkout",
        spec=pack.services["checkout"],
    )
    assert params.query == EXPR
    assert params.origin == "alert"
    assert params.window_seconds == 600  # the default window: 10m
    assert params.note == ""


@pytest.mark.parametrize(
    "url", [None, f"{PROMETHEUS}?g0.tab=1", generator_url("x" * (MAX_CONDITION_QUERY_CHARS + 1))]
)
def test_an_alert_without_a_usable_expression_says_why(pack: RulePack, url: str | None) -> None:
    params = condition_params(
        rule=rule(),
        signal=with_url(alert("HighErrorRate"), url),
        service="checkout",
        spec=pack.services["checkout"],
    )
    assert params.query is None
    assert params.origin == "none"
    assert "generatorURL carries no usable expression" in params.note
    assert "rule errors sets no verify.query" in params.note


@pytest.mark.parametrize(("build", "source"), [(event, "kafka"), (manual, "manual")])
def test_only_alertmanager_signals_may_supply_an_expression(
    pack: RulePack, build: Any, source: str
) -> None:
    # A generatorURL in another source's payload is not Prometheus speaking: ignored.
    signal = with_url(build("deploy.finished"), generator_url(EXPR))
    params = condition_params(
        rule=rule(), signal=signal, service="checkout", spec=pack.services["checkout"]
    )
    assert params.query is None
    assert params.origin == "none"
    assert f"a {source} signal carries no expression" in params.note


def test_a_rule_query_serves_signals_of_every_source(pack: RulePack) -> None:
    params = condition_params(
        rule=rule(query='up{service="$service"} == 0'),
        signal=event("deploy.finished"),
        service="checkout",
        spec=pack.services["checkout"],
    )
    assert params.query == 'up{service="checkout"} == 0'
    assert params.origin == "rule"
