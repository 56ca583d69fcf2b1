"""Channel and recipient routing: service override, then severity, then default."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from remediator.domain.notices import (
    EmailRouting,
    SlackRouting,
    route_email_recipients,
    route_slack_channel,
)

SLACK = SlackRouting.model_validate(
    {
        "default": "#remediator",
        "by_service": {"checkout": "#shop-checkout"},
        "by_severity": {"Critical": "#incidents", "warning": "#alerts"},
    }
)
EMAIL = EmailRouting.model_validate(
    {
        "default": ["ops@example.com"],
        "by_service": {"checkout": ["shop@example.com", "lead@example.com"]},
        "by_severity": {"critical": ["incidents@example.com"]},
    }
)


@pytest.mark.parametrize(
    ("service", "severity", "channel"),
    [
        ("checkout", "critical", "#shop-checkout"),  # the service's own channel wins
        ("payments", "critical", "#incidents"),
        ("payments", "CRITICAL", "#incidents"),  # severities are case-insensitive
        ("payments", "warning", "#alerts"),
        ("payments", "info", "#remediator"),
        ("payments", None, "#remediator"),
    ],
)
def test_slack_channel(service: str, severity: str | None, channel: str) -> None:
    assert route_slack_channel(service=service, severity=severity, routes=SLACK) == channel


@pytest.mark.parametrize(
    ("service", "severity", "recipients"),
    [
        ("checkout", "critical", ["shop@example.com", "lead@example.com"]),
        ("payments", "Critical", ["incidents@example.com"]),
        ("payments", None, ["ops@example.com"]),
    ],
)
def test_email_recipients(service: str, severity: str | None, recipients: list[str]) -> None:
    assert route_email_recipients(service=service, severity=severity, routes=EMAIL) == recipients


def test_no_email_by_default() -> None:
    assert route_email_recipients(service="x", severity=None, routes=EmailRouting()) == []


def test_routing_is_validated_and_frozen() -> None:
    with pytest.raises(ValidationError):
        SlackRouting(default="")
    with pytest.raises(ValidationError):
        EmailRouting.model_validate({"default": ["not-an-address"]})
    with pytest.raises(ValidationError):
        EmailRouting.model_validate({"by_service": {"x": ["a@b.c, evil@d.e"]}})
    with pytest.raises(ValidationError):
        SlackRouting.model_validate({"default": "#x", "colour": "red"})
    with pytest.raises(ValidationError):
        SLACK.default = "#other"  # type: ignore[misc]
