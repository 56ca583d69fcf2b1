from __future__ import annotations

from remediator.connectors.postgres.validate import Check, ValidationReport, state_check
from remediator.domain.record import CheckStatus


def test_state_check() -> None:
    assert state_check(expected="004_x", actual="004_x").passed
    assert state_check(expected=None, actual=None).detail == "at base"
    failed = state_check(expected="002_x", actual="004_x")
    assert not failed.passed and failed.detail == "at 004_x, expected 002_x"


def test_report_as_the_records_database_line() -> None:
    ok = ValidationReport(
        checks=(Check(name="a", passed=True, detail=""), Check(name="b", passed=True, detail="")),
        duration_s=0.01234,
    )
    assert ok.passed and ok.as_check_result().status is CheckStatus.PASSED
    assert ok.to_record()["duration_s"] == 0.012
    bad = ValidationReport(
        checks=(
            Check(name="a", passed=True, detail=""),
            Check(name="invalid_indexes", passed=False, detail="1 invalid: (index='i')"),
        ),
        duration_s=0,
    )
    result = bad.as_check_result()
    assert not bad.passed and [c.name for c in bad.failures] == ["invalid_indexes"]
    assert result.status is CheckStatus.FAILED
    assert result.detail == "invalid_indexes: 1 invalid: (index='i')"
