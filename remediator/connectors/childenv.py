"""The environment a child process (helm, pg_dump, pg_restore, psql, alembic) starts with.

Built from an allow-list, never from the daemon's whole environment: that holds the
webhook token and password, the Slack token, the SMTP and SASL passwords
(``REMEDIATOR_*``), and neither the tool nor a plugin or migration script it runs has
any business with them. What a tool needs beyond the common variables is named by
its connector; values the connector sets for one call (``PGPASSWORD``, the DSN for
alembic) are given explicitly and are the only way anything else gets in.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping

__all__ = ["COMMON", "child_env"]

# What any program needs to find binaries, its home, temporary space, the locale and
# the time zone.
COMMON = frozenset({"PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR"})
COMMON_PREFIXES = ("LC_",)
# Never inherited, whatever a connector asks for: the daemon's own settings and secrets.
NEVER = "REMEDIATOR_"


def child_env(
    values: Mapping[str, str] | None = None,
    *,
    passed: Collection[str] = (),
    passed_prefixes: tuple[str, ...] = (),
    parent: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """``parent``'s (default ``os.environ``) allow-listed variables, then ``values``.

    Inherited: :data:`COMMON`, ``LC_*``, and the names in ``passed`` or starting with one
    of ``passed_prefixes``; never a ``REMEDIATOR_*`` variable. ``values`` are set as
    given (they are the caller's own, chosen for this one call).
    """
    source = os.environ if parent is None else parent
    prefixes = COMMON_PREFIXES + passed_prefixes
    env = {
        name: value
        for name, value in source.items()
        if not name.startswith(NEVER)
        and (name in COMMON or name in passed or name.startswith(prefixes))
    }
    env.update(values or {})
    return env
