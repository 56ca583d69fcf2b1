"""Error types every boundary maps vendor errors to."""

from __future__ import annotations


class RemediatorError(Exception):
    """Base of every error remediator raises on purpose."""


class TemporaryError(RemediatorError):
    """Worth retrying after ``delay`` seconds (the peer or resource may recover)."""

    def __init__(self, message: str, *, delay: float = 1.0) -> None:
        super().__init__(message)
        self.delay = delay


class PermanentError(RemediatorError):
    """Retrying will not help; the input or the request is wrong."""


class InvalidInput(PermanentError):
    """Input that can never be valid; ``where`` names the field or location."""

    def __init__(self, message: str, *, where: str) -> None:
        super().__init__(f"{where}: {message}" if where else message)
        self.where = where
        self.detail = message


class ConfigError(PermanentError):
    """Settings or rule files that cannot be used."""
