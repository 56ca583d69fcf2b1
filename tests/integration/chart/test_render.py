"""The chart renders, lints clean and refuses bad values (helm only, no cluster writes)."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest
import yaml

from tests.integration.chart.conftest import CHART, FULL_VALUES, REPO, Cli, only
from tests.integration.kube.test_rbac import documented_rules

pytestmark = pytest.mark.integration


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    [deployment] = only(objects, "Deployment")
    [c] = deployment["spec"]["template"]["spec"]["containers"]
    return dict(c)


def env_of(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}


def test_app_version_is_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]


def test_the_shipped_prometheus_rules_are_the_charts_copy() -> None:
    """helm reads only inside the chart: files/prometheus is kept equal to rules/prometheus."""
    shipped = REPO / "rules" / "prometheus" / "remediator-alerts.yml"
    copy = CHART / "files" / "prometheus" / "remediator-alerts.yml"
    assert copy.read_text() == shipped.read_text(), f"cp {shipped} {copy}"


@pytest.mark.parametrize("values", [[], ["-f", str(FULL_VALUES)]], ids=["default", "full"])
def test_lint_strict_is_clean(cli: Cli, values: list[str]) -> None:
    out = cli.helm("lint", "--strict", str(CHART), *values)
    assert "0 chart(s) failed" in out and "[WARNING]" not in out and "[ERROR]" not in out


def test_default_values_render_a_restricted_single_replica_deployment(cli: Cli) -> None:
    objects = cli.template()
    assert sorted(o["kind"] for o in objects) == [
        "ConfigMap", "Deployment", "PersistentVolumeClaim", "Service", "ServiceAccount",
    ]  # fmt: skip
    [deployment] = only(objects, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    c = container(objects)
    assert c["securityContext"] == {
        "runAsNonRoot": True, "runAsUser": 10001, "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }  # fmt: skip
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["lifecycle"]["preStop"] == {"sleep": {"seconds": 5}}
    # docs/operations.md: 5 s preStop + 20 s drain, inside the default 30 s.
    assert pod["terminationGracePeriodSeconds"] == 30
    assert env_of(c)["REMEDIATOR_SHUTDOWN__TIMEOUT_SECONDS"] == "20"
    assert (
        env_of(c)["REMEDIATOR_WEBHOOK_TOKEN_FILE"] == "/etc/remediator/secrets/webhook-token/token"
    )
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert mounts["/tmp"] == "tmp" and mounts["/var/lib/remediator"] == "journal"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["tmp"]["emptyDir"]
    assert volumes["journal"]["persistentVolumeClaim"]["claimName"] == "rem-remediator-journal"
    assert c["args"] == ["run", "--config", "/etc/remediator/config/config.yaml"]
    [config] = only(objects, "ConfigMap")
    settings = yaml.safe_load(config["data"]["config.yaml"])
    assert settings["http"]["listen"] == "0.0.0.0:9095"
    assert settings["journal"]["url"] == "sqlite:////var/lib/remediator/journal.db"
    # No managed namespace listed: no Role anywhere, and no ClusterRole ever.
    assert not only(objects, "Role") and not only(objects, "ClusterRole")


def test_the_grace_period_always_fits_prestop_and_the_drain(cli: Cli) -> None:
    objects = cli.template("-f", str(FULL_VALUES))
    c = container(objects)
    [deployment] = only(objects, "Deployment")
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 10 + 40 + 5
    assert c["lifecycle"]["preStop"] == {"sleep": {"seconds": 10}}
    assert env_of(c)["REMEDIATOR_SHUTDOWN__TIMEOUT_SECONDS"] == "40"


def test_every_secret_comes_from_an_existing_secret(cli: Cli) -> None:
    objects = cli.template("-f", str(FULL_VALUES))
    assert not only(objects, "Secret")  # the chart never holds a secret value
    c = container(objects)
    env = env_of(c)
    assert env["REMEDIATOR_AUTH__PRINCIPALS_FILE"] == (
        "/etc/remediator/secrets/principals/principals.yaml"
    )
    assert env["REMEDIATOR_SLACK__TOKEN_FILE"] == "/etc/remediator/secrets/slack-token/token"
    assert (
        env["REMEDIATOR_EMAIL__PASSWORD_FILE"] == "/etc/remediator/secrets/smtp-password/password"
    )
    assert env["REMEDIATOR_KAFKA__SASL_PASSWORD"] == {
        "secretKeyRef": {"name": "remediator-kafka", "key": "password"}
    }
    assert env["CHECKOUT_DATABASE_URL"] == {"secretKeyRef": {"name": "checkout-db", "key": "dsn"}}
    assert env["REMEDIATOR_HTTP__TLS_CLIENT_CA_FILE"] == "/etc/remediator/secrets/tls/ca.crt"
    [deployment] = only(objects, "Deployment")
    secrets = {
        v["secret"]["secretName"]
        for v in deployment["spec"]["template"]["spec"]["volumes"]
        if "secret" in v
    }
    assert secrets == {
        "remediator-webhook", "remediator-principals", "remediator-slack", "remediator-smtp",
        "remediator-tls", "orders-db",
    }  # fmt: skip
    # HTTPS listener: the probes follow.
    assert c["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    [config] = [o for o in only(objects, "ConfigMap") if o["metadata"]["name"].endswith("-config")]
    assert "password" not in config["data"]["config.yaml"].replace("password_file", "")


def test_each_managed_namespace_gets_exactly_the_documented_role(cli: Cli) -> None:
    objects = cli.template("--set", "rbac.namespaces={shop,payments}")
    roles = {r["metadata"]["namespace"]: r for r in only(objects, "Role")}
    assert set(roles) == {"shop", "payments"}
    for role in roles.values():
        assert role["rules"] == documented_rules()
    bindings = only(objects, "RoleBinding")
    assert {b["metadata"]["namespace"] for b in bindings} == {"shop", "payments"}
    for b in bindings:
        assert b["subjects"] == [
            {"kind": "ServiceAccount", "name": "rem-remediator", "namespace": "remediator"}
        ]
        assert b["roleRef"]["name"] == "rem-remediator"


def test_secret_names_restrict_the_dsn_rule(cli: Cli) -> None:
    objects = cli.template(
        "--set", "rbac.namespaces={shop,payments,web}",
        "--set", "rbac.secretNames.shop={checkout-db}",
        "--set-json", 'rbac.secretNames.payments=[]',
    )  # fmt: skip
    roles = {r["metadata"]["namespace"]: r["rules"] for r in only(objects, "Role")}
    others = [r for r in documented_rules() if r["resources"] != ["secrets"]]
    assert roles["shop"] == [*others, {"apiGroups": [""], "resources": ["secrets"],
                                       "resourceNames": ["checkout-db"], "verbs": ["get"]}]  # fmt: skip
    assert roles["payments"] == others  # no dsn_secret there: no Secret access
    assert roles["web"] == documented_rules()


def test_prometheus_rule_carries_the_shipped_alerts_and_the_health_alerts(cli: Cli) -> None:
    objects = cli.template("--set", "prometheusRule.enabled=true")
    [rule] = only(objects, "PrometheusRule")
    shipped = yaml.safe_load((REPO / "rules" / "prometheus" / "remediator-alerts.yml").read_text())
    groups = rule["spec"]["groups"]
    assert groups[: len(shipped["groups"])] == shipped["groups"]
    health = {r["alert"]: r for r in groups[-1]["rules"]}
    assert set(health) == {
        "RemediatorDown", "RemediatorJournalWriterDown", "RemediatorInternalErrors",
        "RemediatorWebhook5xx",
    }  # fmt: skip
    selector = 'job="rem-remediator", namespace="remediator"'
    assert health["RemediatorJournalWriterDown"]["expr"] == (
        f"max(remediator_journal_writer_up{{{selector}}}) == 0"
    )
    assert (
        f"remediator_internal_errors_total{{{selector}}}[10m]"
        in (health["RemediatorInternalErrors"]["expr"])
    )
    # Prometheus' own templates reach it untouched by helm's.
    assert "{{ $labels.component }}" in health["RemediatorInternalErrors"]["annotations"]["summary"]


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--set", "replicas=2"], "maximum: got 2, want 1"),
        (["--set", "journal.type=postgres"], "no PostgreSQL journal yet"),
        (["--set", "replica=1"], "additional properties 'replica' not allowed"),
        (["--set", "config.webhook_token=abc"], "config"),
        (["--set", "secrets.webhookToken.token=abc"], "additional properties 'token'"),
        (["--set", "rbac.namespaces={Shop}"], "rbac/namespaces/0"),
        (["--set", "journal.type=mysql"], "journal/type"),
        (["--set", "secrets.webhookToken.secretName="], "no credential"),
        (["--set", "config.journal.url=sqlite:///x.db"], "config.journal.url"),
    ],
    ids=[
        "two-replicas-on-sqlite",
        "postgres-journal",
        "unknown-key",
        "secret-in-config",
        "secret-value",
        "bad-namespace",
        "unknown-journal",
        "no-credential",
        "journal-url",
    ],
)
def test_bad_values_are_refused_with_the_reason(cli: Cli, args: list[str], reason: str) -> None:
    err = cli.helm_fails("template", "rem", str(CHART), *args)
    assert reason in err, err
    if args == ["--set", "config.webhook_token=abc"]:
        assert "abc" not in err  # the schema's message does not echo a secret
