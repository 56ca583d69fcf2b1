"""Errors the Kubernetes connector raises; every vendor error is mapped to one of these.

They subclass the domain's ``TemporaryError`` / ``PermanentError`` so generic retry
logic keeps working, and add what the executor needs to decide: which object, what
the API said, and whether the right reaction is "re-read and decide again".
"""

from __future__ import annotations

from remediator.domain.errors import PermanentError, TemporaryError


class KubeError(PermanentError):
    """The API refused a request for good; ``target`` names the object ("Deployment ns/web")."""

    def __init__(self, message: str, *, target: str, status: int | None = None) -> None:
        super().__init__(f"{target}: {message}")
        self.target = target
        self.status = status
        self.detail = message


class KubeConflict(KubeError):
    """409: the object changed since it was read (resourceVersion precondition failed).

    Never retry the same request blindly: re-read the object and decide again,
    because what changed it (a human, a deploy, another instance) may have made the
    action wrong.
    """


class KubeAlreadyExists(KubeConflict):
    """409 AlreadyExists on create: someone else created the object first."""


class KubeNotFound(KubeError):
    """404: the named object (or its namespace) does not exist."""


class KubeUnavailable(TemporaryError):
    """5xx, 429, timeouts and connection errors: the control plane may recover."""

    def __init__(self, message: str, *, target: str, delay: float = 2.0) -> None:
        super().__init__(f"{target}: {message}", delay=delay)
        self.target = target


class ActionRefused(PermanentError):
    """A remediation's own precondition does not hold (paused, unknown revision, ...).

    Nothing was changed. The executor reports ``reason`` to a human; it is not the
    API's fault and retrying will not help.
    """

    def __init__(self, message: str, *, target: str, reason: str) -> None:
        super().__init__(f"{target}: {message}")
        self.target = target
        self.reason = reason


class LeaseHeld(PermanentError):
    """The service's Lease is held by another live instance: do not act on the service."""

    def __init__(self, message: str, *, holder: str | None) -> None:
        super().__init__(message)
        self.holder = holder


class LeaseLost(PermanentError):
    """We no longer hold the Lease (expired and taken over, or deleted): stop acting."""
