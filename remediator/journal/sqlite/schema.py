"""The journal's schema: migrations/NNNN_*.sql applied in order, each atomically.

``PRAGMA user_version`` records the last one applied, so an existing journal is
brought forward on open and never migrated twice.
"""

from __future__ import annotations

import logging
import sqlite3
from importlib import resources
from importlib.abc import Traversable

from remediator.domain.errors import PermanentError

log = logging.getLogger(__name__)


def migration_scripts() -> list[Traversable]:
    """Every migration shipped with the package, oldest first."""
    folder = resources.files(__package__ or "remediator.journal.sqlite").joinpath("migrations")
    return sorted(
        (entry for entry in folder.iterdir() if entry.name.endswith(".sql")),
        key=lambda entry: entry.name,
    )


def schema_version() -> int:
    """The version a journal has once this package migrated it."""
    return max(_version(entry) for entry in migration_scripts())


def migrate(conn: sqlite3.Connection) -> None:
    """Apply the migrations newer than PRAGMA user_version, each in one transaction."""
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    for entry in migration_scripts():
        version = _version(entry)
        if version <= current:
            continue
        sql = entry.read_text()
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in statements(sql):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        log.info("journal schema migrated to version %d (%s)", version, entry.name)


def _version(entry: Traversable) -> int:
    return int(entry.name.split("_", 1)[0])


def statements(sql: str) -> list[str]:
    """Split a script into statements (executescript would commit on its own)."""
    found, buffer = [], ""
    for line in sql.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            found.append(buffer.strip())
            buffer = ""
    if buffer.strip() and not all(
        part.strip().startswith("--") or not part.strip() for part in buffer.splitlines()
    ):
        raise PermanentError(f"incomplete SQL statement in migration: {buffer.strip()[:80]}")
    return found
