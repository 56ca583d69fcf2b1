"""The journal's DSN is a secret: only its redacted form is ever shown.

``postgresql://user:password@host:5432/db?sslmode=require`` (``postgres://`` too): the
password may sit in the userinfo or in a ``password=`` parameter; both are masked
(remediator.domain.dsn, shared with the database connector).
"""

from __future__ import annotations

from remediator.domain.dsn import password_of, redact, reveal, scrub

SCHEMES = ("postgresql", "postgres")


def is_postgres_url(url: str) -> bool:
    return url.startswith(tuple(f"{scheme}://" for scheme in SCHEMES))


__all__ = ["SCHEMES", "is_postgres_url", "password_of", "redact", "reveal", "scrub"]
