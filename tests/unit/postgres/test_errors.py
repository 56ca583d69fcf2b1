from __future__ import annotations

import asyncpg
import pytest

from remediator.connectors.postgres.errors import (
    is_temporary_sqlstate,
    map_exception,
    safe_cause,
)
from remediator.domain.errors import PermanentError, TemporaryError


@pytest.mark.parametrize(
    ("code", "temporary"),
    [
        ("08006", True),  # connection failure
        ("40001", True),  # serialization failure
        ("40P01", True),  # deadlock
        ("53300", True),  # too many connections
        ("57P03", True),  # cannot connect now
        ("55P03", True),  # lock not available (lock_timeout)
        ("57014", False),  # our own statement_timeout
        ("42601", False),  # syntax error
        ("42P01", False),  # undefined table
        ("23505", False),  # unique violation
        ("28P01", False),  # wrong password
        (None, False),
    ],
)
def test_sqlstate_classes(code: str | None, temporary: bool) -> None:
    assert is_temporary_sqlstate(code) is temporary


def test_driver_exceptions_map_by_class_and_scrub() -> None:
    err = map_exception(asyncpg.TooManyConnectionsError("sorry, too many clients"), what="backup")
    assert isinstance(err, TemporaryError) and "backup: sorry" in str(err)
    err = map_exception(asyncpg.PostgresSyntaxError("syntax error at or near x"), what="m")
    assert type(err) is PermanentError
    err = map_exception(ConnectionRefusedError(111, "refused pw123"), what="c", secret="pw123")
    assert isinstance(err, TemporaryError) and "pw123" not in str(err)
    assert safe_cause(ValueError("pw123"), "pw123") is None
    plain = ValueError("nothing")
    assert safe_cause(plain, "pw123") is plain
