"""Versioned schema migrations: ``migrations/NNNN_name.sql``, each in one transaction.

``schema_version`` records each one applied. Replicas starting together must not both
migrate: the first takes a session advisory lock, the others wait on it and then find
nothing left to do. A schema newer than this build knows is refused: an older build
must not write to tables it does not understand.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from dataclasses import dataclass
from importlib import resources

import asyncpg

from remediator.domain.errors import PermanentError

log = logging.getLogger(__name__)


def advisory_key(name: str) -> int:
    """A stable signed 64-bit advisory lock key for ``name``."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


MIGRATION_LOCK = advisory_key("remediator.journal.migrate")

_SCHEMA_VERSION = """
CREATE TABLE IF NOT EXISTS schema_version (
    version     integer     PRIMARY KEY,
    name        text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def known_migrations() -> list[Migration]:
    folder = resources.files("remediator.journal.postgres").joinpath("migrations")
    found = [
        Migration(int(entry.name.split("_", 1)[0]), entry.name, entry.read_text())
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    ]
    return sorted(found, key=lambda m: m.version)


def latest_version() -> int:
    return max(m.version for m in known_migrations())


async def schema_version(conn: asyncpg.Connection) -> int:
    """The version applied, 0 for a database the journal never touched."""
    exists = await conn.fetchval("SELECT to_regclass('schema_version') IS NOT NULL")
    if not exists:
        return 0
    version: int = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version")
    return version


async def migrate(conn: asyncpg.Connection) -> int:
    """Apply what is missing, under the migration lock; return the version now in place."""
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await conn.execute(_SCHEMA_VERSION)
        current = await schema_version(conn)
        migrations = known_migrations()
        latest = migrations[-1].version
        if current > latest:
            raise PermanentError(
                f"journal schema is at version {current}, newer than this remediator knows "
                f"({latest}): run the newer remediator, or restore a backup"
            )
        for migration in migrations:
            if migration.version <= current:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_version (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
            log.info("journal schema migrated to version %d (%s)", migration.version,
                     migration.name)  # fmt: skip
            current = migration.version
        return current
    finally:
        # A broken connection released the lock with the session; its error is the news.
        with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
