"""aiokafka connection settings from ``KafkaSettings``, shared by the consumer
(``ingress.kafka``) and the producers (``connectors.kafka``, the dead-letter queue).

A top-level module because ingress and connectors are independent siblings and may
not import each other; both build their clients from this one place so SASL/TLS can
never be configured for one side and forgotten on the other.
"""

from __future__ import annotations

from typing import Any

from aiokafka.helpers import create_ssl_context

from remediator.settings import KafkaSettings


def client_kwargs(settings: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments every aiokafka client (consumer, producer, admin) takes."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": list(settings.bootstrap_servers),
        "client_id": settings.client_id,
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        # Without a CA file the system trust store verifies the broker: TLS is never
        # silently downgraded to "encrypt but trust anyone".
        kwargs["ssl_context"] = create_ssl_context(
            cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None,
            certfile=str(settings.ssl_certfile) if settings.ssl_certfile else None,
            keyfile=str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
        )
    if settings.security_protocol.startswith("SASL_"):
        # The settings validator guarantees mechanism, user and password are all set.
        assert settings.sasl_mechanism is not None and settings.sasl_password is not None
        kwargs["sasl_mechanism"] = settings.sasl_mechanism
        kwargs["sasl_plain_username"] = settings.sasl_username
        kwargs["sasl_plain_password"] = settings.sasl_password.get_secret_value()
    return kwargs
