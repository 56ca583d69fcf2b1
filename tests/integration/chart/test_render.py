"""The chart renders, lints clean and refuses bad values (helm only, no cluster writes)."""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from remediator.settings import JournalSettings, load_settings
from tests.integration.chart.conftest import CHART, FULL_VALUES, POSTGRES_VALUES, REPO, Cli, only
from tests.integration.kube.test_rbac import documented_rules
from tests.unit.rules.test_rules_promtool import promtool

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


@pytest.mark.parametrize(
    "values",
    [[], ["-f", str(FULL_VALUES)], ["-f", str(POSTGRES_VALUES)]],
    ids=["default", "full", "postgres"],
)
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
    assert "topologySpreadConstraints" not in pod  # one replica: nothing to spread
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
    assert not {"REMEDIATOR_JOURNAL__URL", "REMEDIATOR_JOURNAL__URL_FILE"} & set(env_of(c))
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
    assert env["REMEDIATOR_SLACK__SIGNING_SECRET_FILE"] == (
        "/etc/remediator/secrets/slack-signing/signing-secret"
    )
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
        "RemediatorDown", "RemediatorJournalWriterDown", "RemediatorDecisionsBehind",
        "RemediatorInternalErrors", "RemediatorWebhook5xx",
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


def test_the_decisions_behind_alert_fires_only_when_deciding_stays_behind(
    cli: Cli, tmp_path: Path
) -> None:
    """promtool evaluates the rendered rule: a storm's few seconds of queue never fire
    it; an oldest undecided signal over a minute old for five minutes does."""
    objects = cli.template("--set", "prometheusRule.enabled=true")
    [rule] = only(objects, "PrometheusRule")
    health = rule["spec"]["groups"][-1]
    behind = [r for r in health["rules"] if r["alert"] == "RemediatorDecisionsBehind"]
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": [{**health, "rules": behind}]}))
    series = 'remediator_undecided_age_seconds{job="rem-remediator", namespace="remediator"}'
    tests = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                "input_series": [
                    # A storm: 0-8 s of queue, for 20 minutes.
                    {
                        "series": series.replace("}", ', instance="a"}'),
                        "values": "0 8 0 5 0 8 0 5 0 8 0 5 0 8 0 5 0 8 0 5 0 8 0 5 0 8 0 5 0 8 0 5 0 8 0 5 0 8 0 5",
                    },
                    # Deciding stopped 20 s in: the oldest's wait grows 15 s a read.
                    {"series": series.replace("}", ', instance="b"}'), "values": "0 0 15+15x80"},
                ],
                "alert_rule_test": [
                    # Over a minute since 90 s: not yet for five minutes at 6 min.
                    {"eval_time": "6m", "alertname": "RemediatorDecisionsBehind", "exp_alerts": []},
                    {
                        "eval_time": "11m",
                        "alertname": "RemediatorDecisionsBehind",
                        "exp_alerts": [
                            {
                                "exp_labels": {"severity": "critical"},
                                "exp_annotations": {
                                    "summary": "remediator's deciding is behind by more than a minute",
                                    "description": (
                                        "Alerts are journaled but not decided, so nothing is "
                                        "remediated; 10m 45s is the oldest's wait. Look for "
                                        "decision-engine restarts (remediator_root_task_restarts_total) "
                                        "and ERROR lines in the pod's log."
                                    ),
                                },
                            }
                        ],
                    },
                ],
            }
        ],
    }
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests))
    result = promtool("test", "rules", str(tmp_path / "tests.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--set", "replicas=2"], "/replicas': maximum: got 2, want 1"),
        (
            ["--set", "journal.type=postgres"],
            "/journal/postgres/existingSecret/secretName': minLength: got 0, want 1",
        ),
        (["--set", "replica=1"], "additional properties 'replica' not allowed"),
        (["--set", "config.webhook_token=abc"], "config"),
        (["--set", "secrets.webhookToken.token=abc"], "additional properties 'token'"),
        (["--set", "rbac.namespaces={Shop}"], "rbac/namespaces/0"),
        (["--set", "journal.type=mysql"], "journal/type"),
        (["--set", "secrets.webhookToken.secretName="], "no credential"),
        (["--set", "config.journal.url=sqlite:///x.db"], "config.journal.url"),
        (
            ["-f", str(POSTGRES_VALUES), "--set", "config.journal.url=postgresql://u:pw@db/r"],
            "config.journal.url: the chart sets the journal's URL",
        ),
        (
            ["-f", str(POSTGRES_VALUES), "--set", "config.journal.url_file=/tmp/dsn"],
            "config.journal.url_file: the chart sets it",
        ),
        (
            ["-f", str(POSTGRES_VALUES), "--set", "journal.postgres.existingSecret.dsn=x"],
            "additional properties 'dsn' not allowed",
        ),
        (
            ["-f", str(POSTGRES_VALUES), "--set", "podDisruptionBudget.minAvailable=one"],
            "podDisruptionBudget/minAvailable",
        ),
        (["--set", "spreadAcrossNodes=always"], "spreadAcrossNodes"),
        (["--set", "config.prometheus.url=prometheus:9090"], "config/prometheus/url"),
        (["--set", "config.prometheus.adress=http://p:9090"], "additional properties 'adress'"),
    ],
    ids=[
        "two-replicas-on-sqlite",
        "postgres-without-secret",
        "unknown-key",
        "secret-in-config",
        "secret-value",
        "bad-namespace",
        "unknown-journal",
        "no-credential",
        "journal-url",
        "journal-url-on-postgres",
        "journal-url-file",
        "dsn-value",
        "bad-min-available",
        "bad-spread",
        "prometheus-url-without-scheme",
        "prometheus-typo",
    ],
)
def test_bad_values_are_refused_with_the_reason(cli: Cli, args: list[str], reason: str) -> None:
    err = cli.helm_fails("template", "rem", str(CHART), *args)
    assert reason in err, err
    if args == ["--set", "config.webhook_token=abc"]:
        assert "abc" not in err  # the schema's message does not echo a secret
    assert "pw@" not in err  # nor the template's a DSN


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (
            ["--set", "replicas=2"],
            "replicas > 1 needs the shared PostgreSQL journal (journal.type postgres)",
        ),
        (
            ["--set", "journal.type=postgres", "--set", "replicas=3"],
            "journal.type postgres needs journal.postgres.existingSecret.secretName",
        ),
    ],
    ids=["two-replicas-on-sqlite", "postgres-without-secret"],
)
def test_the_templates_refuse_the_journal_mistakes_without_the_schema_too(
    cli: Cli, args: list[str], reason: str
) -> None:
    """The schema says where; the template says why, and holds with the schema skipped."""
    err = cli.helm_fails("template", "rem", str(CHART), "--skip-schema-validation", *args)
    assert reason in err, err


# -- PostgreSQL journal: several replicas ------------------------------------------------

JOURNAL_SECRET_DIR = "/etc/remediator/secrets/journal"


def pod_spec(objects: list[dict[str, Any]]) -> dict[str, Any]:
    [deployment] = only(objects, "Deployment")
    return dict(deployment["spec"]["template"]["spec"])


def test_postgres_runs_replicas_behind_a_rolling_update_and_a_disruption_budget(
    cli: Cli,
) -> None:
    objects = cli.template("-f", str(POSTGRES_VALUES))
    assert sorted(o["kind"] for o in objects) == [
        "ConfigMap", "ConfigMap", "Deployment", "PodDisruptionBudget", "PrometheusRule",
        "Role", "RoleBinding", "Service", "ServiceAccount", "ServiceMonitor",
    ]  # fmt: skip  # no PersistentVolumeClaim: nothing of the journal is on a volume
    [deployment] = only(objects, "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 3
    # A replacement is ready before an old pod goes: a receiver is always there.
    assert spec["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }  # fmt: skip
    [pdb] = only(objects, "PodDisruptionBudget")
    assert pdb["spec"] == {
        "maxUnavailable": 1,
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
        "selector": spec["selector"],
    }
    pod_labels = spec["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    env = env_of(container(objects))
    # Each replica its own holder name in Leases, claims and heartbeats.
    assert env["REMEDIATOR_KUBERNETES__INSTANCE_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["REMEDIATOR_JOURNAL__URL_FILE"] == f"{JOURNAL_SECRET_DIR}/url"  # the default key
    [rule] = only(objects, "PrometheusRule")
    [writer_down] = [r for r in rule["spec"]["groups"][-1]["rules"]
                     if r["alert"] == "RemediatorJournalWriterDown"]  # fmt: skip
    assert "check the database" in writer_down["annotations"]["description"]  # not a volume
    [spread] = pod_spec(objects)["topologySpreadConstraints"]
    assert spread == {
        "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
        "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": spec["selector"],
        "matchLabelKeys": ["pod-template-hash"],
    }  # fmt: skip


def test_the_journal_dsn_comes_only_from_the_secret_file(cli: Cli) -> None:
    objects = cli.template(
        "-f", str(POSTGRES_VALUES),
        "--set", "journal.postgres.existingSecret.secretName=journal-db",
        "--set", "journal.postgres.existingSecret.key=dsn",
    )  # fmt: skip
    assert not only(objects, "Secret")
    c = container(objects)
    env = env_of(c)
    assert env["REMEDIATOR_JOURNAL__URL_FILE"] == f"{JOURNAL_SECRET_DIR}/dsn"
    # Emptied so the image's default SQLite URL does not win over the file.
    assert env["REMEDIATOR_JOURNAL__URL"] == ""
    # No env var takes a value from the journal's Secret.
    refs = [v["secretKeyRef"]["name"] for v in env.values() if isinstance(v, dict)
            and "secretKeyRef" in v]  # fmt: skip
    assert "journal-db" not in refs
    [mount] = [m for m in c["volumeMounts"] if m["mountPath"] == JOURNAL_SECRET_DIR]
    assert mount["readOnly"] is True
    volumes = {v["name"]: v for v in pod_spec(objects)["volumes"]}
    # The whole Secret: a CA beside the URL is a file the URL can name (sslrootcert).
    assert volumes[mount["name"]]["secret"] == {"secretName": "journal-db", "defaultMode": 0o400}
    assert all("journal-db" not in str(config["data"]) for config in only(objects, "ConfigMap"))
    [config] = [o for o in only(objects, "ConfigMap") if o["metadata"]["name"].endswith("-config")]
    # The user's journal settings pass through; the URL is the chart's, and not in here.
    assert yaml.safe_load(config["data"]["config.yaml"])["journal"] == {
        "pool_size": 8, "heartbeat_seconds": 5, "claim_stale_seconds": 30,
    }  # fmt: skip


def test_postgres_mode_keeps_no_journal_on_a_volume(cli: Cli) -> None:
    """/var/lib/remediator holds helm's caches and pg_dump backups only: an emptyDir,
    whatever journal.persistence says; backups may go to an existing claim."""
    objects = cli.template(
        "-f", str(POSTGRES_VALUES), "--set", "journal.persistence.existingClaim=old-journal"
    )
    assert not only(objects, "PersistentVolumeClaim")
    mounts = {m["mountPath"]: m["name"] for m in container(objects)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(objects)["volumes"]}
    assert volumes[mounts["/var/lib/remediator"]] == {
        "name": "work",
        "emptyDir": {"sizeLimit": "4Gi"},
    }
    assert "/var/lib/remediator/backups" not in mounts
    assert not [v for v in volumes.values() if "persistentVolumeClaim" in v]

    objects = cli.template(
        "-f", str(POSTGRES_VALUES), "--set", "journal.postgres.backups.existingClaim=backups-rwx",
        "--set", "journal.postgres.workDir.sizeLimit=",
    )  # fmt: skip
    mounts = {m["mountPath"]: m["name"] for m in container(objects)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(objects)["volumes"]}
    assert volumes[mounts["/var/lib/remediator"]]["emptyDir"] == {}
    assert volumes[mounts["/var/lib/remediator/backups"]]["persistentVolumeClaim"] == {
        "claimName": "backups-rwx"
    }
    assert not only(objects, "PersistentVolumeClaim")  # the claim is yours, not the chart's


@pytest.mark.parametrize(
    ("args", "budget"),
    [
        (["--set", "replicas=1"], None),  # one replica: a budget would block every drain
        (["--set", "podDisruptionBudget.enabled=false"], None),
        (["--set", "podDisruptionBudget.minAvailable=2"], {"minAvailable": 2}),
        (["--set", "podDisruptionBudget.maxUnavailable=50%"], {"maxUnavailable": "50%"}),
    ],
    ids=["one-replica", "disabled", "min-available", "percent"],
)
def test_the_disruption_budget_follows_the_values(
    cli: Cli, args: list[str], budget: dict[str, Any] | None
) -> None:
    objects = cli.template("-f", str(POSTGRES_VALUES), *args)
    pdbs = only(objects, "PodDisruptionBudget")
    if budget is None:
        assert not pdbs
    else:
        [pdb] = pdbs
        limits = {k: v for k, v in pdb["spec"].items() if k in ("minAvailable", "maxUnavailable")}
        assert limits == budget
    # The strategy does not depend on the replica count: a shared journal rolls.
    [deployment] = only(objects, "Deployment")
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"


@pytest.mark.parametrize(
    ("args", "when"),
    [
        (["--set", "spreadAcrossNodes=hard"], ["DoNotSchedule"]),
        (["--set", "spreadAcrossNodes="], []),
        (["--set", "replicas=1"], []),
    ],
    ids=["hard", "off", "one-replica"],
)
def test_the_spread_across_nodes_follows_the_values(
    cli: Cli, args: list[str], when: list[str]
) -> None:
    objects = cli.template("-f", str(POSTGRES_VALUES), *args)
    constraints = pod_spec(objects).get("topologySpreadConstraints", [])
    assert [c["whenUnsatisfiable"] for c in constraints] == when


def test_own_spread_constraints_come_after_the_chart_s(cli: Cli) -> None:
    zone = {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app.kubernetes.io/instance": "rem"}}}  # fmt: skip
    objects = cli.template(
        "-f", str(POSTGRES_VALUES), "--set-json", f"topologySpreadConstraints=[{json.dumps(zone)}]"
    )
    keys = [c["topologyKey"] for c in pod_spec(objects)["topologySpreadConstraints"]]
    assert keys == ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]


def test_sqlite_mode_ignores_the_replica_values(cli: Cli) -> None:
    """podDisruptionBudget, spreadAcrossNodes and journal.postgres change nothing on SQLite."""
    default = cli.template()
    objects = cli.template(
        "--set", "podDisruptionBudget.minAvailable=1", "--set", "spreadAcrossNodes=hard",
        "--set", "journal.postgres.existingSecret.secretName=journal-db",
        "--set", "journal.postgres.backups.existingClaim=backups-rwx",
    )  # fmt: skip
    assert objects == default


# -- What the daemon in the pod reads -----------------------------------------------------

SECRETS_DIR = "/etc/remediator/secrets/"
DSN = "postgresql://remediator:s3cret@journal-db.db.svc:5432/remediator?sslmode=verify-full"


def image_environment() -> dict[str, str]:
    """The Dockerfile's REMEDIATOR_* defaults: a pod's env adds to them or overrides them."""
    text = (REPO / "Dockerfile").read_text()
    return dict(re.findall(r"\b(REMEDIATOR_[A-Z0-9_]+)=(\S+)", text))


def pods_view(cli: Cli, args: list[str], root: Path) -> tuple[Path, dict[str, str]]:
    """The rendered config.yaml and the container's environment, with its Secret files
    written under ``root`` (the journal's holding DSN) as the kubelet would mount them."""
    objects = cli.template(*args)
    [config] = [o for o in only(objects, "ConfigMap") if o["metadata"]["name"].endswith("-config")]
    config_file = root / "config.yaml"
    config_file.write_text(config["data"]["config.yaml"])
    env = image_environment()
    for item in container(objects)["env"]:
        if "value" not in item:  # field refs and secretKeyRefs: the kubelet's
            continue
        value = item["value"]
        if value.startswith(SECRETS_DIR):
            path = root / value.removeprefix(SECRETS_DIR)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(DSN if "/journal/" in value else "a-webhook-token")
            value = str(path)
        env[item["name"]] = value
    return config_file, env


def _plain(value: Any) -> str:
    return value.get_secret_value() if isinstance(value, SecretStr) else str(value)


@pytest.mark.parametrize(
    ("args", "journal_url"),
    [([], "sqlite:////var/lib/remediator/journal.db"), (["-f", str(POSTGRES_VALUES)], DSN)],
    ids=["sqlite", "postgres"],
)
def test_the_daemon_reads_the_journal_the_chart_means(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str],
    journal_url: str,
) -> None:  # fmt: skip
    """The settings the daemon builds from the image's environment, the Deployment's and
    the rendered config.yaml: the image's SQLite default must not shadow the DSN file."""
    if args and "url_file" not in JournalSettings.model_fields:
        pytest.skip("journal.url_file (the PostgreSQL journal's settings) is not here yet")
    config_file, env = pods_view(cli, args, tmp_path)
    for name in [n for n in os.environ if n.startswith("REMEDIATOR_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(config_file=config_file)
    assert _plain(settings.journal.url) == journal_url
    assert settings.http.listen == "0.0.0.0:9095"


def test_the_daemon_asks_the_prometheus_the_values_name(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``config.prometheus`` reaches the daemon's settings: verification's queries go there."""
    url = "http://prometheus-operated.monitoring.svc:9090"
    args = ["--set", f"config.prometheus.url={url}", "--set", "config.prometheus.poll_seconds=5"]
    config_file, env = pods_view(cli, args, tmp_path)
    for name in [n for n in os.environ if n.startswith("REMEDIATOR_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings(config_file=config_file)
    assert settings.prometheus.url == url
    assert (settings.prometheus.poll_seconds, settings.prometheus.timeout_seconds) == (5, 10)
    # Unset by default: the condition check is then recorded skipped, never passed.
    (tmp_path / "default").mkdir()
    default_file, _ = pods_view(cli, [], tmp_path / "default")
    assert load_settings(config_file=default_file).prometheus.url is None
