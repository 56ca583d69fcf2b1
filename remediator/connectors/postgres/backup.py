"""``pg_dump`` before a revert, checked twice; ``pg_restore`` of a database or a table.

Layout (one directory per service, mode 0700; files 0600 since they hold data)::

    <directory>/<service>/<id>.dump   pg_dump --format=custom archive
    <directory>/<service>/<id>.json   what Backup records (sha256, size, timings...)

``<id>`` is ``<UTC time>-<database>-<random>``, so names sort by time. The archive is
written as ``<id>.dump.partial`` and renamed only after ``pg_restore --list`` read it
back; the ``.json`` is written last. A ``.dump`` without its ``.json`` is therefore
never a usable backup, and :func:`list_backups` ignores it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr

from remediator.connectors.postgres.dsn import close_quietly, connect, libpq_target, password_of
from remediator.connectors.postgres.errors import BackupError, map_exception
from remediator.connectors.postgres.tools import find_bindir, run_tool, server_major
from remediator.domain.errors import PermanentError, RemediatorError
from remediator.domain.retention import RetentionPolicy, Verdict, judge

__all__ = [
    "Backup",
    "BackupRetention",
    "Restore",
    "backup",
    "backup_retention",
    "list_backups",
    "prune_backups",
    "quote_ident",
    "restore_database",
    "restore_table",
    "verify_backup",
]

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_CHUNK = 1 << 20
# "4171; 0 16401 TABLE DATA public users remediator"
_TOC_TABLE_DATA = re.compile(r"^\d+; \d+ \d+ TABLE DATA (\S+) (\S+) ")


@dataclass(frozen=True, slots=True, kw_only=True)
class Backup:
    id: str
    service: str
    path: Path
    sha256: str
    size_bytes: int
    started_at: datetime
    duration_s: float
    database: str
    server_version: str
    entries: int  # TOC entries pg_restore --list read back

    def to_record(self) -> dict[str, Any]:
        """JSON-able facts for the journal (no DSN, no host)."""
        return {
            "id": self.id,
            "service": self.service,
            "path": str(self.path),
            "sha256": self.sha256,
            "size_bytes": self.size_bytes,
            "started_at": self.started_at.isoformat(),
            "duration_s": round(self.duration_s, 3),
            "database": self.database,
            "server_version": self.server_version,
            "entries": self.entries,
        }

    @classmethod
    def from_record(cls, data: dict[str, Any], *, path: Path) -> Backup:
        return cls(
            id=str(data["id"]),
            service=str(data["service"]),
            path=path,
            sha256=str(data["sha256"]),
            size_bytes=int(data["size_bytes"]),
            started_at=datetime.fromisoformat(str(data["started_at"])),
            duration_s=float(data["duration_s"]),
            database=str(data["database"]),
            server_version=str(data["server_version"]),
            entries=int(data.get("entries", 0)),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Restore:
    kind: Literal["database", "table"]
    backup_id: str
    database: str
    table: str | None  # "schema.table" for a table restore
    duration_s: float


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _check_name(value: str, *, what: str) -> str:
    # Names become path components: nothing that could climb out of the directory.
    if not _SAFE_NAME.match(value) or value in (".", ".."):
        raise PermanentError(f"{what} {value!r} is not a safe file name")
    return value


async def _server_facts(dsn: SecretStr, *, timeout_s: float) -> tuple[str, str, int]:
    """(database, server_version, server major) from the server itself."""
    password = password_of(dsn)
    conn = await connect(dsn, what="backup", timeout_s=timeout_s)
    try:
        row = await conn.fetchrow(
            "SELECT current_database() AS db, current_setting('server_version') AS v,"
            " current_setting('server_version_num')::int AS n"
        )
    except Exception as exc:
        raise map_exception(exc, what="backup: server facts", secret=password) from exc
    finally:
        await close_quietly(conn)
    assert row is not None
    return str(row["db"]), str(row["v"]), server_major(int(row["n"]))


def _digest(path: Path, *, sync: bool) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
        if sync:
            os.fsync(fh.fileno())  # the archive must survive a crash that follows the revert
    return h.hexdigest(), size


async def _list_archive(path: Path, *, bindir: Path, timeout_s: float) -> list[str]:
    result = await run_tool(
        [str(bindir / "pg_restore"), "--list", str(path)],
        env={"LC_MESSAGES": "C"},
        what=f"pg_restore --list {path.name}",
        secret=None,
        timeout_s=timeout_s,
    )
    return [line for line in result.stdout.splitlines() if line and not line.startswith(";")]


def _major_of(version: str) -> int:
    match = re.match(r"(\d+)", version)
    return int(match.group(1)) if match else 0


async def backup(
    *,
    dsn: SecretStr,
    directory: Path,
    service: str,
    clock: Callable[[], datetime],
    bindir: Path | None = None,
    timeout_s: float = 3600.0,
    lock_wait_timeout_s: float = 60.0,
    connect_timeout_s: float = 10.0,
) -> Backup:
    """``pg_dump --format=custom`` of the DSN's database, read back and checksummed.

    ``lock_wait_timeout_s`` bounds how long pg_dump waits for its share locks: a
    migration stuck holding an exclusive lock must fail the backup, not hang it.
    """
    _check_name(service, what="service")
    database, version, major = await _server_facts(dsn, timeout_s=connect_timeout_s)
    tools = bindir or find_bindir(server_major=major)
    target = libpq_target(dsn)
    folder = directory / service
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    started_at = clock()
    stamp = started_at.strftime("%Y%m%dT%H%M%S%fZ")
    label = re.sub(r"[^A-Za-z0-9_-]", "_", database)[:40] or "db"
    backup_id = f"{stamp}-{label}-{secrets.token_hex(3)}"
    final = folder / f"{backup_id}.dump"
    partial = folder / f"{backup_id}.dump.partial"
    t0 = time.monotonic()
    try:
        await run_tool(
            [
                str(tools / "pg_dump"),
                "--format=custom",
                f"--file={partial}",
                "--no-password",
                f"--lock-wait-timeout={int(lock_wait_timeout_s * 1000)}",
                f"--dbname={target.conninfo}",
            ],
            env=target.env,
            what=f"pg_dump of {database} for {service}",
            secret=password_of(dsn),
            timeout_s=timeout_s,
        )
        partial.chmod(0o600)
        entries = await _list_archive(partial, bindir=tools, timeout_s=timeout_s)
        sha256, size = await asyncio.to_thread(_digest, partial, sync=True)
        partial.rename(final)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    result = Backup(
        id=backup_id,
        service=service,
        path=final,
        sha256=sha256,
        size_bytes=size,
        started_at=started_at,
        # Rounded as recorded, so a Backup read back from its .json compares equal.
        duration_s=round(time.monotonic() - t0, 3),
        database=database,
        server_version=version,
        entries=len(entries),
    )
    meta = folder / f"{backup_id}.json"
    tmp = folder / f"{backup_id}.json.partial"
    tmp.write_text(json.dumps(result.to_record(), indent=2) + "\n", encoding="utf-8")
    tmp.chmod(0o600)
    tmp.rename(meta)
    return result


async def verify_backup(
    backup: Backup, *, bindir: Path | None = None, timeout_s: float = 600.0
) -> None:
    """Raise BackupError unless the archive is intact: size, sha256, readable TOC."""
    if not backup.path.is_file():
        raise BackupError(f"backup {backup.id}: {backup.path} is missing")
    sha256, size = await asyncio.to_thread(_digest, backup.path, sync=False)
    if size != backup.size_bytes:
        raise BackupError(f"backup {backup.id}: size {size} bytes, recorded {backup.size_bytes}")
    if sha256 != backup.sha256:
        raise BackupError(f"backup {backup.id}: sha256 {sha256} differs from recorded")
    tools = bindir or find_bindir(server_major=_major_of(backup.server_version))
    try:
        await _list_archive(backup.path, bindir=tools, timeout_s=timeout_s)
    except RemediatorError as exc:
        raise BackupError(f"backup {backup.id}: archive unreadable: {exc}") from exc


def list_backups(directory: Path, service: str) -> list[Backup]:
    """Complete backups of ``service``, newest first."""
    folder = directory / _check_name(service, what="service")
    found: list[Backup] = []
    for meta in folder.glob("*.json"):
        dump = meta.with_suffix(".dump")
        if not dump.is_file():
            continue
        try:
            found.append(Backup.from_record(json.loads(meta.read_text("utf-8")), path=dump))
        except (ValueError, KeyError, TypeError):
            continue  # a damaged sidecar is not a backup we can vouch for
    return sorted(found, key=lambda b: (b.started_at, b.id), reverse=True)


async def restore_database(
    *,
    dsn: SecretStr,
    backup: Backup,
    bindir: Path | None = None,
    no_owner: bool = False,
    timeout_s: float = 3600.0,
) -> Restore:
    """Put every object in the archive back as it was, in one transaction.

    ``pg_restore --clean --if-exists --single-transaction``: objects in the archive are
    dropped and recreated with their data; an error rolls the whole restore back.
    Objects created *after* the backup (a table a later migration added) are not in the
    archive and are left alone.
    """
    await verify_backup(backup, bindir=bindir)
    tools = bindir or find_bindir(server_major=_major_of(backup.server_version))
    target = libpq_target(dsn)
    t0 = time.monotonic()
    argv = [
        str(tools / "pg_restore"),
        "--clean",
        "--if-exists",
        "--single-transaction",
        "--exit-on-error",
        "--no-password",
        f"--dbname={target.conninfo}",
    ]
    if no_owner:
        argv.append("--no-owner")
    await run_tool(
        [*argv, str(backup.path)],
        env=target.env,
        what=f"pg_restore of backup {backup.id} into {target.database}",
        secret=password_of(dsn),
        timeout_s=timeout_s,
    )
    return Restore(
        kind="database",
        backup_id=backup.id,
        database=target.database,
        table=None,
        duration_s=time.monotonic() - t0,
    )


async def restore_table(
    *,
    dsn: SecretStr,
    backup: Backup,
    table: str,
    schema: str = "public",
    bindir: Path | None = None,
    timeout_s: float = 3600.0,
) -> Restore:
    """Replace one table's rows with the archive's, keeping the table's current definition.

    In one transaction: ``TRUNCATE ONLY`` the table, then the archive's ``COPY`` of it
    (``pg_restore --data-only --schema --table``). Indexes, constraints, grants and
    dependent objects stay; a table other tables reference by foreign key is refused
    by TRUNCATE (nothing changes) rather than emptied in cascade. Triggers on the
    table fire for the restored rows; sequences are not reset.
    """
    await verify_backup(backup, bindir=bindir)
    tools = bindir or find_bindir(server_major=_major_of(backup.server_version))
    entries = await _list_archive(backup.path, bindir=tools, timeout_s=timeout_s)
    wanted = (schema, table)
    if not any(
        (m := _TOC_TABLE_DATA.match(line)) and (m.group(1), m.group(2)) == wanted
        for line in entries
    ):
        # Without this check an absent table would be truncated and "restored" empty.
        raise PermanentError(f"backup {backup.id} has no data for table {schema}.{table}")
    target = libpq_target(dsn)
    secret = password_of(dsn)
    script = backup.path.with_name(f"{backup.path.stem}.{secrets.token_hex(4)}.table.sql")
    t0 = time.monotonic()
    try:
        # To a file first, not a pipe: if pg_restore failed half-way, psql would see
        # EOF and commit a partial table.
        await run_tool(
            [
                str(tools / "pg_restore"),
                "--data-only",
                f"--schema={schema}",
                f"--table={table}",
                f"--file={script}",
                str(backup.path),
            ],
            env=target.env,
            what=f"pg_restore of {schema}.{table} from backup {backup.id}",
            secret=secret,
            timeout_s=timeout_s,
        )
        script.chmod(0o600)
        await run_tool(
            [
                str(tools / "psql"),
                "--no-psqlrc",
                "--quiet",
                "--no-password",
                "--set=ON_ERROR_STOP=1",
                "--single-transaction",
                f"--command=TRUNCATE ONLY {quote_ident(schema)}.{quote_ident(table)}",
                f"--file={script}",
                f"--dbname={target.conninfo}",
            ],
            env=target.env,
            what=f"restore of {schema}.{table} from backup {backup.id}",
            secret=secret,
            timeout_s=timeout_s,
        )
    finally:
        script.unlink(missing_ok=True)
    return Restore(
        kind="table",
        backup_id=backup.id,
        database=target.database,
        table=f"{schema}.{table}",
        duration_s=time.monotonic() - t0,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class BackupRetention:
    """What retention does to one service's backups: each with its verdict, newest first."""

    service: str
    judged: tuple[tuple[Backup, Verdict], ...]
    leftovers: tuple[Path, ...]  # parts of crashed backups or prunes, past the age limit
    dry_run: bool

    @property
    def pruned(self) -> tuple[Backup, ...]:
        return tuple(b for b, verdict in self.judged if not verdict.kept)

    def to_record(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "kept": [b.id for b, verdict in self.judged if verdict.kept],
            "pruned": [b.id for b in self.pruned],
            "leftovers": [p.name for p in self.leftovers],
            "dry_run": self.dry_run,
        }


def backup_retention(
    directory: Path,
    service: str,
    *,
    policy: RetentionPolicy,
    now: datetime,
    in_use: Collection[str] = (),
) -> BackupRetention:
    """What :func:`prune_backups` would do now; changes nothing."""
    found = {b.id: b for b in list_backups(directory, service)}
    judged = judge(((b.id, b.started_at) for b in found.values()), policy=policy, now=now,
                   in_use=in_use)  # fmt: skip
    horizon = (now - timedelta(days=policy.keep_days)).timestamp()
    return BackupRetention(
        service=service,
        judged=tuple((found[j.key], j.verdict) for j in judged),
        leftovers=tuple(_leftovers(directory / service, older_than=horizon)),
        dry_run=True,
    )


def prune_backups(
    directory: Path,
    service: str,
    *,
    policy: RetentionPolicy,
    now: datetime,
    in_use: Collection[str] = (),
    dry_run: bool,
) -> BackupRetention:
    """Delete the backups retention does not keep (see :mod:`remediator.domain.retention`).

    The ``.json`` goes first: a ``.dump`` without it is never a usable backup, so a
    crash half-way leaves nothing that looks valid, and the ``.dump`` is a leftover
    the next prune removes.
    """
    plan = backup_retention(directory, service, policy=policy, now=now, in_use=in_use)
    if dry_run:
        return plan
    for gone in plan.pruned:
        gone.path.with_suffix(".json").unlink(missing_ok=True)
        gone.path.unlink(missing_ok=True)
    for path in plan.leftovers:
        path.unlink(missing_ok=True)
    return dataclasses.replace(plan, dry_run=False)


def _leftovers(folder: Path, *, older_than: float) -> Iterator[Path]:
    """``.partial`` files and ``.dump`` files without their ``.json``, last written before
    ``older_than`` (a backup being written right now is younger)."""
    if not folder.is_dir():
        return
    for path in sorted(folder.iterdir()):
        orphan = path.suffix == ".dump" and not path.with_suffix(".json").exists()
        if (orphan or path.name.endswith(".partial")) and path.stat().st_mtime < older_than:
            yield path
