"""Alembic environment reading its URL from REMEDIATOR_DATABASE_URL (set by remediator).

The URL is handed to the engine directly, not through ``config.set_main_option``:
configparser would treat a ``%`` in a percent-encoded password as interpolation.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

URL = os.environ["REMEDIATOR_DATABASE_URL"]


def run_migrations(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()


async def main() -> None:
    engine = create_async_engine(URL, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_migrations)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline mode is not used by remediator")
asyncio.run(main())
