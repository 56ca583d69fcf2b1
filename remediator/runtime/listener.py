"""Who may call the listener, and over what: credentials, throttling, TLS, the bind check."""

from __future__ import annotations

import ssl
from collections.abc import Iterable

from remediator.domain.auth import Principal
from remediator.domain.errors import ConfigError
from remediator.ingress.auth import (
    Authenticator,
    FailedAuthLimiter,
    WebhookCredential,
    load_principals,
)
from remediator.settings import HttpSettings, Settings, is_loopback


def auth_from_settings(settings: Settings) -> Authenticator:
    """The principals of ``auth.principals_file`` and the ingest-only webhook credential;
    ConfigError naming the file and the entry when they are not right."""
    webhook = WebhookCredential(
        bearer_token=settings.webhook_token.get_secret_value() if settings.webhook_token else None,
        basic_user=settings.webhook_username,
        basic_password=(
            settings.webhook_password.get_secret_value() if settings.webhook_password else None
        ),
    )
    path = settings.auth.principals_file
    principals = load_principals(path) if path is not None else []
    return Authenticator(principals=principals, webhook=webhook)


def failed_auth_limiter(settings: Settings) -> FailedAuthLimiter:
    a = settings.auth
    return FailedAuthLimiter(
        max_failures=a.max_failures,
        window_seconds=a.failure_window_seconds,
        max_clients=a.tracked_clients,
    )


def server_ssl_context(http: HttpSettings) -> ssl.SSLContext | None:
    """HTTPS (TLS 1.2 or later) when a certificate is set; with a client CA, every
    client must present a certificate that CA signed (refused in the handshake otherwise).

    ConfigError names the setting and the file, never their contents.
    """
    if http.tls_cert_file is None or http.tls_key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(http.tls_cert_file, http.tls_key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"http.tls_cert_file {http.tls_cert_file} / http.tls_key_file {http.tls_key_file}: "
            f"cannot load them ({_tls_problem(exc)})"
        ) from None
    if http.tls_client_ca_file is not None:
        try:
            context.load_verify_locations(cafile=http.tls_client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"http.tls_client_ca_file {http.tls_client_ca_file}: cannot load it "
                f"({_tls_problem(exc)})"
            ) from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _tls_problem(exc: OSError | ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    return exc.strerror or type(exc).__name__


def approvers_by_role(principals: Iterable[Principal]) -> dict[str, tuple[str, ...]]:
    """Approver role -> the principals holding it, by name (who an escalation waits for)."""
    holders: dict[str, list[str]] = {}
    for principal in principals:
        for role in principal.approver_roles:
            holders.setdefault(role, []).append(principal.name)
    return {role: tuple(sorted(names)) for role, names in sorted(holders.items())}


def check_bind_is_safe(settings: Settings) -> None:
    """Without credentials anyone who reaches the port could trigger rollbacks."""
    host = settings.http.host
    if settings.auth_configured or is_loopback(host) or settings.http.insecure_no_auth:
        return
    raise ConfigError(
        f"refusing to listen on {settings.http.listen} without credentials: set "
        "auth.principals_file (REMEDIATOR_AUTH__PRINCIPALS_FILE) and/or "
        "REMEDIATOR_WEBHOOK_TOKEN (or REMEDIATOR_WEBHOOK_TOKEN_FILE, or basic auth), "
        "listen on 127.0.0.1, or pass --insecure-no-auth"
    )
