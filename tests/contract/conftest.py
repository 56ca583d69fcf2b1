"""One suite, both journals: every test runs against SQLite and against PostgreSQL.

``journal`` is a fresh, open journal of each kind (a new file; a new database on the
session's PostgreSQL server). ``replica`` opens another journal on the same storage,
as a second replica would: its own connections, its own instance name.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from pydantic import SecretStr

from remediator.journal.postgres import PostgresJournal
from remediator.ports import Journal
from tests.contract.builders import Clock
from tests.pgdb import fresh_database

MakeJournal = Callable[[str, Clock], Journal]
OpenReplica = Callable[..., Awaitable[Journal]]


@dataclass(frozen=True)
class Storage:
    kind: str  # sqlite | postgres
    make: MakeJournal
    dsn: SecretStr | None = None
    path: Path | None = None  # the SQLite file

    async def rows(self, sql: str) -> list[tuple[Any, ...]]:
        """What ``sql`` reads straight from the storage: for the tables no port reads."""
        if self.path is not None:
            with contextlib.closing(sqlite3.connect(self.path)) as conn:
                return list(conn.execute(sql).fetchall())
        assert self.dsn is not None
        conn = await asyncpg.connect(self.dsn.get_secret_value())
        try:
            return [tuple(row) for row in await conn.fetch(sql)]
        finally:
            await conn.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.contract)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@contextlib.asynccontextmanager
async def open_storage(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Storage]:
    if kind == "sqlite":
        from remediator.journal.sqlite import SqliteJournal

        path = tmp_path / "journal.db"
        yield Storage(
            kind="sqlite",
            make=lambda instance, clock: SqliteJournal(path=path, clock=clock, instance=instance),
            path=path,
        )
        return
    server: Any = request.getfixturevalue("postgres")
    async with fresh_database(server.endpoints["postgres_dsn"]) as dsn:
        yield Storage(
            kind="postgres",
            make=lambda instance, clock: PostgresJournal(
                dsn=dsn, clock=clock, instance=instance, pool_size=4
            ),
            dsn=dsn,
        )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    async with open_storage(request.param, request, tmp_path) as opened:
        yield opened


@pytest.fixture
async def replica(storage: Storage, clock: Clock) -> AsyncIterator[OpenReplica]:
    """Open a journal on the test's storage as instance ``name``; closed at the end."""
    opened: list[Journal] = []

    async def open_replica(name: str = "replica-a", *, on: Clock | None = None) -> Journal:
        journal = storage.make(name, on or clock)
        await journal.open()
        opened.append(journal)
        return journal

    yield open_replica
    for journal in reversed(opened):
        await journal.close()


@pytest.fixture
async def journal(replica: OpenReplica) -> Journal:
    return await replica("replica-a")
