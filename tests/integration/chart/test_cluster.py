"""The chart on the test cluster: the real API schemas validate every object, it installs
into the kwok cluster, and its ServiceAccount holds exactly docs/rbac.md's rules."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.env.kube import FAKE_NODES
from tests.integration.chart.conftest import CHART, FULL_VALUES, POSTGRES_VALUES, Cli
from tests.integration.kube.test_rbac import documented_rules

pytestmark = pytest.mark.integration

# The Prometheus Operator is not installed in the test cluster. These CRDs register its
# two kinds with a structural schema that checks what the chart writes at the top of
# spec (groups, endpoints, selector); the operator's full schemas are not vendored here.
OPERATOR_CRDS = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: servicemonitors.monitoring.coreos.com}
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {kind: ServiceMonitor, plural: servicemonitors, singular: servicemonitor, listKind: ServiceMonitorList}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [selector, endpoints]
              properties:
                selector: {type: object, x-kubernetes-preserve-unknown-fields: true}
                endpoints:
                  type: array
                  items:
                    type: object
                    properties:
                      port: {type: string}
                      path: {type: string}
                      scheme: {type: string, enum: [http, https]}
                      interval: {type: string, pattern: '^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$'}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: prometheusrules.monitoring.coreos.com}
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {kind: PrometheusRule, plural: prometheusrules, singular: prometheusrule, listKind: PrometheusRuleList}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                groups:
                  type: array
                  items:
                    type: object
                    required: [name, rules]
                    properties:
                      name: {type: string, minLength: 1}
                      rules:
                        type: array
                        items:
                          type: object
                          required: [expr]
                          properties:
                            alert: {type: string}
                            record: {type: string}
                            expr: {x-kubernetes-int-or-string: true}
                            for: {type: string}
                            labels: {type: object, additionalProperties: {type: string}}
                            annotations: {type: object, additionalProperties: {type: string}}
"""


def wait_for(probe: Callable[[], bool], *, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:.0f}s")
        time.sleep(0.2)


def install_operator_crds(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "crds.yaml"
    path.write_text(OPERATOR_CRDS)
    cli.kubectl("apply", "-f", str(path))
    for crd in ("servicemonitors", "prometheusrules"):
        cli.kubectl("wait", "--for=condition=Established", f"crd/{crd}.monitoring.coreos.com",
                    "--timeout=60s")  # fmt: skip


@pytest.mark.parametrize(
    ("values", "expected_kinds"),
    [
        (FULL_VALUES, [
            "ConfigMap", "ConfigMap", "Deployment", "NetworkPolicy", "PersistentVolumeClaim",
            "PrometheusRule", "Role", "Role", "RoleBinding", "RoleBinding", "Service",
            "ServiceAccount", "ServiceMonitor",
        ]),
        # Several replicas: a PodDisruptionBudget, the spread, no journal claim.
        (POSTGRES_VALUES, [
            "ConfigMap", "ConfigMap", "Deployment", "PodDisruptionBudget", "PrometheusRule",
            "Role", "Role", "RoleBinding", "RoleBinding", "Service", "ServiceAccount",
            "ServiceMonitor",
        ]),
    ],
    ids=["full", "postgres"],
)  # fmt: skip
def test_every_object_passes_the_apiservers_validation(
    cli: Cli,
    namespaces: Callable[[str], str],
    tmp_path: Path,
    values: Path,
    expected_kinds: list[str],
) -> None:
    install_operator_crds(cli, tmp_path)
    release_ns, shop, payments = namespaces("rem"), namespaces("shop"), namespaces("payments")
    rendered = cli.helm(
        "template", "rem", str(CHART), "--namespace", release_ns, "-f", str(values),
        "--set", f"rbac.namespaces={{{shop},{payments}}}",
        "--set-json", f'rbac.secretNames={{"{payments}": ["payments-db"]}}',
    )  # fmt: skip
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(rendered) if d)
    assert kinds == sorted(expected_kinds)
    out = cli.kubectl(
        "apply", "--dry-run=server", "--validate=strict", "-f", "-",
        stdin=rendered,
    )  # fmt: skip
    assert out.count("(server dry run)") == len(kinds), out


# The journal's DSN; kwok runs no containers, so nothing connects to it.
JOURNAL_DSN = "postgresql://remediator:pw@journal-db.db.svc:5432/remediator"


@pytest.mark.parametrize(
    ("values", "replicas", "journal_note"),
    [
        # No storage provisioner in the kwok cluster: the journal is an emptyDir here.
        (["--set", "journal.persistence.enabled=false"], 1, "Journal: SQLite in an emptyDir"),
        # The Prometheus Operator's kinds are left out: their CRDs may not be there.
        (["-f", str(POSTGRES_VALUES), "--set", "spreadAcrossNodes=hard",
          "--set", "serviceMonitor.enabled=false", "--set", "prometheusRule.enabled=false"],
         3, "Journal: PostgreSQL, shared by 3 replica(s) (RollingUpdate, PodDisruptionBudget)"),
    ],
    ids=["sqlite", "postgres"],
)  # fmt: skip
def test_install_into_the_cluster(
    cli: Cli,
    namespaces: Callable[[str], str],
    values: list[str],
    replicas: int,
    journal_note: str,
) -> None:
    release_ns, shop = namespaces("rem"), namespaces("shop")
    cli.kubectl("create", "secret", "generic", "remediator-journal", "-n", release_ns,
                "--from-literal", f"url={JOURNAL_DSN}")  # fmt: skip
    cli.helm(
        "install", "rem", str(CHART), "--namespace", release_ns, "--wait", "--timeout", "90s",
        *values, "--set", f"rbac.namespaces={{{shop}}}",
    )  # fmt: skip
    deployment = json.loads(cli.kubectl("get", "deployment", "rem-remediator", "-n", release_ns,
                                        "-o", "json"))  # fmt: skip
    assert deployment["status"].get("readyReplicas") == replicas  # kwok marks pods Ready
    role = json.loads(cli.kubectl("get", "role", "rem-remediator", "-n", shop, "-o", "json"))
    assert role["rules"] == documented_rules()
    notes = cli.helm("get", "notes", "rem", "--namespace", release_ns)
    assert f"url: http://rem-remediator.{release_ns}.svc:9095/api/v1/webhooks/alertmanager" in notes
    assert "credentials_file:" in notes and "remediator-webhook" in notes
    assert journal_note in notes
    if replicas > 1:
        assert_replicas_spread_and_budgeted(cli, release_ns, replicas)
    cli.helm("uninstall", "rem", "--namespace", release_ns, "--wait", "--timeout", "60s")
    assert "No resources found" in cli.run(
        [cli.kubectl_bin, "get", "roles", "-n", shop]
    ).stderr  # fmt: skip


def assert_replicas_spread_and_budgeted(cli: Cli, namespace: str, replicas: int) -> None:
    pods = json.loads(cli.kubectl("get", "pods", "-n", namespace, "-o", "json",
                                  "-l", "app.kubernetes.io/instance=rem"))["items"]  # fmt: skip
    assert len(pods) == replicas
    # spreadAcrossNodes hard: 3 replicas on the 2 kwok nodes take both.
    assert {p["spec"]["nodeName"] for p in pods} == set(FAKE_NODES)

    def budget() -> dict[str, Any]:
        pdb = json.loads(cli.kubectl("get", "pdb", "rem-remediator", "-n", namespace, "-o",
                                     "json"))  # fmt: skip
        return dict(pdb.get("status", {}))

    # The disruption controller counts the pods the budget selects: all of them healthy,
    # one may go at a time.
    wait_for(lambda: budget().get("currentHealthy") == replicas, what="the budget's count")
    assert budget()["disruptionsAllowed"] == 1
    assert budget()["desiredHealthy"] == replicas - 1


def test_a_release_moves_from_sqlite_to_postgres_and_keeps_the_sqlite_claim(
    cli: Cli, namespaces: Callable[[str], str]
) -> None:
    """docs/install.md's move: the SQLite claim outlives the upgrade (its history is what
    `remediator journal copy` reads, and the way back), the Deployment starts rolling."""
    release_ns, shop = namespaces("rem"), namespaces("shop")
    cli.kubectl("create", "secret", "generic", "remediator-journal", "-n", release_ns,
                "--from-literal", f"url={JOURNAL_DSN}")  # fmt: skip
    # No provisioner here: the claim stays Pending, which is all this test needs of it.
    cli.helm("install", "rem", str(CHART), "--namespace", release_ns,
             "--set", f"rbac.namespaces={{{shop}}}")  # fmt: skip
    claim = json.loads(cli.kubectl("get", "pvc", "rem-remediator-journal", "-n", release_ns,
                                   "-o", "json"))  # fmt: skip
    cli.kubectl("scale", "deployment/rem-remediator", "--replicas=0", "-n", release_ns)
    cli.helm(
        "upgrade", "rem", str(CHART), "--namespace", release_ns, "--wait", "--timeout", "90s",
        "-f", str(POSTGRES_VALUES), "--set", f"rbac.namespaces={{{shop}}}",
        "--set", "serviceMonitor.enabled=false", "--set", "prometheusRule.enabled=false",
    )  # fmt: skip
    deployment = json.loads(cli.kubectl("get", "deployment", "rem-remediator", "-n", release_ns,
                                        "-o", "json"))  # fmt: skip
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }  # fmt: skip
    assert deployment["status"].get("readyReplicas") == 3
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert not [v for v in volumes if "persistentVolumeClaim" in v]
    after = json.loads(cli.kubectl("get", "pvc", "rem-remediator-journal", "-n", release_ns,
                                   "-o", "json"))  # fmt: skip
    assert after["metadata"]["uid"] == claim["metadata"]["uid"]  # kept, not recreated
    assert "rem-remediator-journal" not in cli.helm("get", "manifest", "rem", "-n", release_ns)


# -- kubectl auth can-i --list ----------------------------------------------------------

_BRACKETS = re.compile(r"\[([^\]]*)\]")


def can_i_list(cli: Cli, namespace: str, account: str) -> set[tuple[str, str, str]]:
    """(resource, resource names, verb) the account may use in ``namespace``."""
    out = cli.kubectl("auth", "can-i", "--list", "-n", namespace, f"--as={account}")
    granted: set[tuple[str, str, str]] = set()
    for line in out.splitlines()[1:]:
        groups = _BRACKETS.findall(line)
        resource = line.split("[", 1)[0].strip()
        if not resource:  # a non-resource URL (/api, /healthz ...)
            continue
        _urls, names, verbs = groups[-3:]
        granted |= {(resource, names, verb) for verb in verbs.split()}
    return granted


def as_can_i(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """docs/rbac.md's rules as can-i --list spells them (deployments.apps/scale)."""
    out = set()
    for rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                name, _, sub = resource.partition("/")
                spelled = (f"{name}.{group}" if group else name) + (f"/{sub}" if sub else "")
                for verb in rule["verbs"]:
                    out.add((spelled, " ".join(rule.get("resourceNames", [])), verb))
    return out


def test_the_service_account_can_do_exactly_what_docs_rbac_says(
    cli: Cli, namespaces: Callable[[str], str]
) -> None:
    release_ns, shop, elsewhere = namespaces("rem"), namespaces("shop"), namespaces("other")
    cli.helm(
        "install", "rem", str(CHART), "--namespace", release_ns,
        "--set", f"rbac.namespaces={{{shop}}}", "--set", "journal.persistence.enabled=false",
    )  # fmt: skip
    # What every authenticated account may do anyway (self reviews, discovery): an
    # account of the same namespace bound to nothing.
    bystander = f"nobody-{uuid.uuid4().hex[:4]}"
    cli.kubectl("create", "serviceaccount", bystander, "-n", release_ns)
    baseline = can_i_list(cli, shop, f"system:serviceaccount:{release_ns}:{bystander}")
    account = f"system:serviceaccount:{release_ns}:rem-remediator"
    expected = as_can_i(documented_rules())

    def granted() -> set[tuple[str, str, str]]:
        return can_i_list(cli, shop, account) - baseline

    # RBAC reaches the authorizer through an informer.
    wait_for(lambda: granted() == expected, what="the Role in effect", timeout=30)
    assert granted() == expected
    # Nothing in any other namespace, its own included.
    assert can_i_list(cli, elsewhere, account) - baseline == set()
    assert can_i_list(cli, release_ns, account) - baseline == set()
