"""``remediator rules check`` and ``rules explain`` through their argparse wiring."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from remediator.cli import rules as cli_rules

from .conftest import RULES_DIR


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="remediator")
    cli_rules.register(parser.add_subparsers(required=True))
    args = parser.parse_args(list(argv))
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_check_passes_on_the_shipped_pack(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "rules", "check", str(RULES_DIR))
    assert code == 0
    assert out.startswith("ok: 4 service(s), 17 rule(s) in 3 file(s)")


def test_check_lists_every_problem_with_file_and_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "catalog.yaml").write_text(
        "services:\n  web:\n    namespace: web\n    workload: web\n    rollback: {strategy: helm}\n"
    )
    (tmp_path / "rules.yaml").write_text(
        "rules:\n  - name: r\n    match: {source: alertmanager, services: [cart]}\n"
        "    action: rollback\n    colldown: 5m\n"
    )
    code, out, _ = run(capsys, "rules", "check", str(tmp_path))
    assert code == 1
    assert out.splitlines() == [
        f"{tmp_path}/catalog.yaml:5: services.web.rollback.release: Field required",
        f"{tmp_path}/rules.yaml:5: rules[0].colldown: Extra inputs are not permitted",
        "2 problem(s) in 2 file(s)",
    ]


def test_check_of_a_missing_path(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "rules", "check", str(tmp_path / "nope"))
    assert code == 1
    assert "no such rule file or directory" in err


ALERTS = {
    "receiver": "remediator",
    "status": "firing",
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "MemoryPressure", "service": "checkout", "namespace": "shop"},
            "annotations": {},
            "startsAt": "2026-11-27T08:50:00.123456789Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": "a1",
        },
        {
            "status": "resolved",
            "labels": {"alertname": "HighErrorRate", "service": "checkout", "namespace": "shop"},
            "startsAt": "2026-11-27T08:00:00Z",
            "endsAt": "2026-11-27T08:40:00Z",
            "fingerprint": "b2",
        },
    ],
}
STATE = """\
current_replicas: 4
deploys:
  - {revision: "7", version: v1.3.0, finished_at: "2026-11-26T10:00:00Z", healthy: true}
  - {revision: "8", version: v1.4.0, finished_at: "2026-11-27T08:40:00Z"}
"""


def test_explain_an_alertmanager_payload(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "alerts.json").write_text(json.dumps(ALERTS))
    (tmp_path / "state.yaml").write_text(STATE)
    code, out, _ = run(
        capsys,
        "rules",
        "explain",
        "--rules",
        str(RULES_DIR),
        "--alert",
        str(tmp_path / "alerts.json"),
        "--state",
        str(tmp_path / "state.yaml"),
        "--now",
        "2026-11-27T09:00:00Z",
    )
    assert code == 0
    first, second = out.split("\n\n")
    assert "matching rule: memory-pressure-scale-or-rollback" in first
    assert "plan: rollback shop/checkout (rule asked for scale_or_rollback)" in first
    assert "rollout_undo namespace=shop deployment=checkout from_revision=8 to_revision=7" in first
    assert "no action (resolved)" in second


def test_explain_a_single_alert_without_state_and_with_no_rule(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    one = {
        "labels": {"alertname": "DiskFull", "service": "checkout"},
        "startsAt": "2026-11-27T08:00:00Z",
    }
    (tmp_path / "alert.json").write_text(json.dumps(one))
    code, out, _ = run(
        capsys,
        "rules",
        "explain",
        "--rules",
        str(RULES_DIR),
        "--alert",
        str(tmp_path / "alert.json"),
    )
    assert code == 0
    assert "matching rule: none" in out
    assert "  high-error-rate-rollback: 'DiskFull' is not one of ['HighErrorRate']" in out
    assert "no action (no_rule)" in out


def test_explain_an_event_in_dry_run(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    ce = {
        "specversion": "1.0",
        "id": "1",
        "type": "migration.failed",
        "source": "ci",
        "data": {"service": "checkout", "namespace": "shop", "migration": "042", "version": "v9"},
    }
    (tmp_path / "event.json").write_text(json.dumps(ce))
    code, out, _ = run(
        capsys,
        "rules",
        "explain",
        "--event",
        str(tmp_path / "event.json"),
        "--rules",
        str(RULES_DIR),
        "--dry-run",
    )
    assert code == 0
    assert "no action (dry_run)" in out
    assert "would have run:" in out
    assert "backup_database" in out


def test_explain_rejects_bad_input(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "event.json").write_text('{"type": "x"}')
    code, _, err = run(
        capsys,
        "rules",
        "explain",
        "--event",
        str(tmp_path / "event.json"),
        "--rules",
        str(RULES_DIR),
    )
    assert code == 2
    assert "specversion" in err
    (tmp_path / "state.yaml").write_text("current_replicas: -1\n")
    (tmp_path / "alert.json").write_text('{"labels": {"alertname": "X"}}')
    code, _, err = run(
        capsys,
        "rules",
        "explain",
        "--alert",
        str(tmp_path / "alert.json"),
        "--state",
        str(tmp_path / "state.yaml"),
        "--rules",
        str(RULES_DIR),
    )
    assert code == 2
    assert "current_replicas" in err


def test_explain_says_why_an_alert_may_not_choose_the_migration(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    forged = {
        "labels": {"alertname": "MigrationFailed", "service": "checkout", "namespace": "shop",
                   "migration": "001"},
        "startsAt": "2026-11-27T08:50:00Z",
    }  # fmt: skip
    (tmp_path / "alert.json").write_text(json.dumps(forged))
    (tmp_path / "state.yaml").write_text(
        "migrations:\n  - {id: 042_add_index, status: failed, at: '2026-11-27T08:40:00Z'}\n"
    )
    code, out, _ = run(
        capsys, "rules", "explain", "--rules", str(RULES_DIR), "--alert",
        str(tmp_path / "alert.json"), "--state", str(tmp_path / "state.yaml"),
        "--now", "2026-11-27T09:00:00Z",
    )  # fmt: skip
    assert code == 0
    assert "matching rule: migration-failed-alert-revert" in out
    assert (
        "no action (needs_human): alert MigrationFailed (firing) for shop/checkout asks to "
        "revert migration '001', but the latest migration trusted history records for "
        "'checkout' is '042_add_index'"
    ) in out
    assert "people are notified" in out


def test_explain_a_signal_outside_the_catalog(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    inside_kube_system = {
        "labels": {"alertname": "HighErrorRate", "service": "checkout", "namespace": "kube-system"},
        "startsAt": "2026-11-27T08:50:00Z",
    }
    (tmp_path / "alert.json").write_text(json.dumps(inside_kube_system))
    code, out, _ = run(
        capsys, "rules", "explain", "--rules", str(RULES_DIR), "--alert",
        str(tmp_path / "alert.json"), "--now", "2026-11-27T09:00:00Z",
    )  # fmt: skip
    assert code == 0
    assert "no action (not_in_catalog)" in out
    assert "namespace 'kube-system' is not where the catalog places 'checkout' ('shop')" in out
