"""Who may do what: principals, their roles, token hashes and the approval checks.

A principal is a named holder of credentials (docs/security.md). Its roles say which
API routes it may call; its approver roles (free names such as ``dba`` or
``tech-lead``) say which plans it may approve: a rule's ``approvers`` name them
(``approvals.py`` decides what the approvals amount to).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

TOKEN_HASH_SCHEME = "sha256"  # noqa: S105 - the hash's name, not a secret
TOKEN_HASH_PATTERN = re.compile(r"sha256:[0-9a-f]{64}")
# Tokens are random strings made for machines (docs/security.md): a fast hash is enough
# because nobody can guess such a token from its hash; a short one could be.
MIN_TOKEN_CHARS = 32
PRINCIPAL_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}")
APPROVER_ROLE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}")


class Role(StrEnum):
    INGEST = "ingest"  # POST webhooks
    READ = "read"  # GET the API
    OPERATE = "operate"  # rollback requests, approve, reject, cancel, review, circuit reset
    ADMIN = "admin"  # everything the other roles may do


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    name: str
    roles: frozenset[Role]
    approver_roles: frozenset[str] = frozenset()

    def holds(self, role: Role) -> bool:
        return role in self.roles or Role.ADMIN in self.roles

    def roles_text(self) -> str:
        return ", ".join(sorted(self.roles)) or "no role"

    def approver_roles_text(self) -> str:
        return ", ".join(sorted(self.approver_roles)) or "no approver role"


def forbidden(principal: Principal, role: Role) -> str:
    """The 403 message: the role needed and what the principal holds (no secrets)."""
    return (
        f"forbidden: role '{role.value}' required "
        f"(principal '{principal.name}' has: {principal.roles_text()})"
    )


def hash_token(token: str) -> str:
    """What a principals file stores for a bearer token: ``sha256:<64 hex digits>``."""
    return f"{TOKEN_HASH_SCHEME}:{hashlib.sha256(token.encode()).hexdigest()}"


def token_digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


def digest_of_hash(text: str) -> bytes:
    """The digest a ``sha256:<hex>`` line stands for; ValueError if it is not one."""
    if TOKEN_HASH_PATTERN.fullmatch(text) is None:
        raise ValueError(f"not {TOKEN_HASH_SCHEME}:<64 lower-case hex digits>")
    return bytes.fromhex(text.split(":", 1)[1])


def matching_digest(presented: bytes, known: Iterable[bytes]) -> int | None:
    """Index of the known digest equal to ``presented``.

    Every known digest is compared, each in constant time, so the time taken does not
    say which one (or how much of one) matched.
    """
    found: int | None = None
    for index, digest in enumerate(known):
        if hmac.compare_digest(presented, digest) and found is None:
            found = index
    return found
