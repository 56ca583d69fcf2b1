"""The metrics registry: the default collectors and build info, and docs/metrics.md
generated from it (regenerate with `python -m remediator.runtime.metrics_doc >
docs/metrics.md` when this fails)."""

from __future__ import annotations

import platform
from pathlib import Path

import remediator
from remediator.metrics import Metrics
from remediator.runtime.metrics_doc import daemon_registry, families, render

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_the_process_python_and_build_collectors_are_on_our_registry() -> None:
    registry = Metrics().registry
    assert registry.get_sample_value("process_cpu_seconds_total") is not None
    assert registry.get_sample_value("process_resident_memory_bytes", {}) > 0
    names = {metric.name for metric in registry.collect()}
    assert {"python_info", "python_gc_objects_collected"} <= names
    build = {"version": remediator.__version__, "python": platform.python_version()}
    assert registry.get_sample_value("remediator_build_info", build) == 1.0


def test_two_registries_do_not_clash() -> None:
    # The runtime owns its registry; tests build many (no global state, no duplicates).
    first, second = Metrics(), Metrics()
    first.circuit_open.set(1)
    assert second.registry.get_sample_value("remediator_circuit_open") == 0


def test_docs_metrics_md_is_generated_from_the_registry() -> None:
    generated = render(families(daemon_registry()))
    on_disk = (DOCS / "metrics.md").read_text()
    assert on_disk == generated, (
        "docs/metrics.md is out of date: python -m remediator.runtime.metrics_doc > docs/metrics.md"
    )


def test_every_family_is_documented_with_its_labels() -> None:
    found = {family.name: family for family in families(daemon_registry())}
    text = (DOCS / "metrics.md").read_text()
    assert len([name for name in found if name.startswith("remediator_")]) >= 40
    for name, family in found.items():
        assert f"| `{name}` |" in text
        assert family.help
    assert found["remediator_notifications_total"].labels == ("channel", "result")
    assert found["remediator_kafka_events_consumed_total"].labels == ("type",)
    assert found["remediator_build_info"].labels == ("python", "version")
    assert found["remediator_remediation_duration_seconds"].type == "histogram"


def test_operations_points_to_the_reference() -> None:
    operations = (DOCS / "operations.md").read_text()
    assert "(metrics.md)" in operations
