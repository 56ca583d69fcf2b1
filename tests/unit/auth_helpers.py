"""Principals for tests of the HTTP API: made in code, as a principals file would make them."""

from __future__ import annotations

from collections.abc import Sequence

from remediator.domain.auth import Principal, Role, token_digest
from remediator.ingress.auth import Authenticator, PrincipalCredentials, WebhookCredential

WEBHOOK_TOKEN = "s3cret-token"
OPERATOR_TOKEN = "operator-token-6b1f0c2e9d4a7b3c5e8f1a2d"


def principal(
    name: str,
    *roles: Role,
    token: str | None = None,
    approver_roles: Sequence[str] = (),
    subjects: Sequence[str] = (),
    cns: Sequence[str] = (),
    slack_users: Sequence[str] = (),
) -> PrincipalCredentials:
    return PrincipalCredentials(
        principal=Principal(
            name=name, roles=frozenset(roles), approver_roles=frozenset(approver_roles)
        ),
        token_digests=(token_digest(token.encode()),) if token else (),
        certificate_subjects=tuple(subjects),
        certificate_cns=tuple(cns),
        slack_users=tuple(slack_users),
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def standard_authenticator(*more: PrincipalCredentials) -> Authenticator:
    """The webhook token (ingest only) and an operator principal with read and operate."""
    return Authenticator(
        principals=[
            principal("ops", Role.READ, Role.OPERATE, token=OPERATOR_TOKEN),
            *more,
        ],
        webhook=WebhookCredential(bearer_token=WEBHOOK_TOKEN),
    )
