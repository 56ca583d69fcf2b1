"""The DSN's password never reaches logs, errors (with their causes) or the record."""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
from pydantic import SecretStr

from remediator.connectors.postgres import ServiceLocks, SqlDirRunner, backup, revert_with_backup
from remediator.connectors.postgres.dsn import password_of, with_database
from remediator.domain.errors import PermanentError, RemediatorError, TemporaryError
from remediator.domain.lifecycle import RemediationStatus
from tests.integration.postgres.conftest import at_004_with_data

pytestmark = pytest.mark.integration

Clock = Callable[[], datetime]


def everything_said(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))  # message, causes and contexts


async def test_a_whole_revert_logs_and_records_no_password(
    db: SecretStr,
    migrations: Path,
    backups: Path,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    password = password_of(db)
    assert password
    down = migrations / "003_add_orders.down.sql"
    down.write_text("SELECT 1/0;\n")  # the second step fails
    await at_004_with_data(db, migrations)

    outcome = await revert_with_backup(
        service="checkout",
        runner=SqlDirRunner(dsn=db, directory=migrations),
        dsn=db,
        backup_dir=backups,
        target="002",
        locks=ServiceLocks(),
        clock=clock,
    )

    assert outcome.status is RemediationStatus.FAILED
    assert outcome.reverted == ("004_add_users_email_index",)
    assert outcome.error is not None and "003_add_orders.down.sql" in outcome.error
    assert "revert of checkout" in caplog.text  # it did log
    said = caplog.text + json.dumps(outcome.to_record()) + repr(outcome)
    assert password not in said
    assert db.get_secret_value() not in said
    for path in backups.rglob("*.json"):
        assert password not in path.read_text()


@pytest.mark.parametrize("problem", ["wrong password", "no such database", "closed port"])
async def test_connection_failures_name_no_password(
    db: SecretStr,
    backups: Path,
    clock: Clock,
    caplog: pytest.LogCaptureFixture,
    problem: str,
    migrations: Path,
) -> None:
    caplog.set_level(logging.DEBUG)
    password = password_of(db)
    assert password
    raw = db.get_secret_value()
    if problem == "wrong password":
        dsn = SecretStr(raw.replace(password, "Wr0ng-" + password))
        secret = "Wr0ng-" + password
        kind: type[RemediatorError] = PermanentError
    elif problem == "no such database":
        # The server echoes the database name: here it is the password itself.
        dsn, secret, kind = with_database(db, password), password, PermanentError
    else:
        dsn = SecretStr(raw.replace(raw.split("@")[1].split("/")[0], "127.0.0.1:1"))
        secret, kind = password, TemporaryError

    for attempt in (
        backup(dsn=dsn, directory=backups, service="checkout", clock=clock),
        SqlDirRunner(dsn=dsn, directory=migrations).status(),
        revert_with_backup(
            service="checkout",
            runner=SqlDirRunner(dsn=dsn, directory=migrations),
            dsn=dsn,
            backup_dir=backups,
            target=None,
            locks=ServiceLocks(),
            clock=clock,
        ),
    ):
        with pytest.raises(kind) as caught:
            await attempt
        assert secret not in everything_said(caught.value)
        assert "***" in str(caught.value)  # the redacted DSN says where it tried
    assert secret not in caplog.text
