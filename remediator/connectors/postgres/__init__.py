"""PostgreSQL: DSNs, backups and restores, migration runners, validation, and a revert
that takes a verified backup first. See docs/database.md.
"""

from remediator.connectors.postgres.alembic_runner import AlembicRunner
from remediator.connectors.postgres.backup import (
    Backup,
    BackupRetention,
    Restore,
    backup,
    backup_retention,
    list_backups,
    prune_backups,
    restore_database,
    restore_table,
    verify_backup,
)
from remediator.connectors.postgres.dsn import SecretSource, redact, resolve_dsn, scrub
from remediator.connectors.postgres.errors import (
    BackupError,
    MigrationFailed,
    MigrationRetryable,
    NonTransactionalMigration,
    RevertBusy,
)
from remediator.connectors.postgres.model import (
    BASE,
    MigrationRunner,
    MigrationStatus,
    RevertResult,
)
from remediator.connectors.postgres.runner import (
    RevertOutcome,
    ServiceLocks,
    advisory_lock,
    revert_with_backup,
)
from remediator.connectors.postgres.sqldir import SqlDirRunner
from remediator.connectors.postgres.validate import (
    Check,
    IntegrityQuery,
    ValidationReport,
    validate,
)

__all__ = [
    "BASE",
    "AlembicRunner",
    "Backup",
    "BackupError",
    "BackupRetention",
    "Check",
    "IntegrityQuery",
    "MigrationFailed",
    "MigrationRetryable",
    "MigrationRunner",
    "MigrationStatus",
    "NonTransactionalMigration",
    "Restore",
    "RevertBusy",
    "RevertOutcome",
    "RevertResult",
    "SecretSource",
    "ServiceLocks",
    "SqlDirRunner",
    "ValidationReport",
    "advisory_lock",
    "backup",
    "backup_retention",
    "list_backups",
    "prune_backups",
    "redact",
    "resolve_dsn",
    "restore_database",
    "restore_table",
    "revert_with_backup",
    "scrub",
    "validate",
    "verify_backup",
]
