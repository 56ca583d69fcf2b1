"""Where the operator commands read and write: the daemon's API, or the journal file.

Both answer the same questions with the same JSON shapes (the API serves what the
journal holds), so each command is written once. The journal file is the break-glass
path: a shell inside the pod, or a copy of the file. Writes there carry no
authenticated principal; what they record is the local OS user.
"""

from __future__ import annotations

import asyncio
import getpass
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar
from urllib.parse import quote

from pydantic import SecretStr

from remediator.cli.api import ApiClient, ApiOptions
from remediator.cli.common import EXIT_FAILED, EXIT_USAGE, CliError
from remediator.domain.errors import ConfigError
from remediator.domain.lifecycle import Remediation, RemediationStatus
from remediator.domain.record import RecordFormat
from remediator.ports import (
    ApprovalStore,
    CircuitRecord,
    CircuitStore,
    JournalLifecycle,
    RemediationStore,
    SignalStore,
)

__all__ = ["ApiBackend", "Backend", "JournalBackend", "Page", "collect", "local_user"]

PAGE_SIZE = 1000  # the API's largest page (ingress.http.MAX_PAGE)
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True, kw_only=True)
class Page:
    """One page of items in the API's JSON form, and the cursor of the next."""

    items: Sequence[dict[str, Any]]
    next_cursor: str | None


class CliJournal(
    JournalLifecycle, SignalStore, RemediationStore, ApprovalStore, CircuitStore, Protocol
):
    """The journal roles the operator commands use: what the read API and approvals use."""


class Backend(Protocol):
    def signals(self, *, service: str | None, limit: int, cursor: str | None) -> Page: ...

    def remediations(
        self, *, service: str | None, status: str | None, limit: int, cursor: str | None
    ) -> Page: ...

    def remediation(self, remediation_id: str) -> dict[str, Any]:
        """The remediation in full; CliError (exit 1) when there is none."""
        ...

    def record(self, remediation_id: str, *, fmt: RecordFormat) -> str: ...

    def approve(self, remediation_id: str, *, comment: str | None) -> dict[str, Any]:
        """The approved remediation; CliError (exit 1) if missing or not awaiting approval."""
        ...

    def answer(self, remediation_id: str, verb: str, *, comment: str | None) -> dict[str, Any]:
        """``reject``, ``cancel`` or ``review`` it; the remediation after."""
        ...

    def request(
        self, body: dict[str, Any], *, idempotency_key: str | None
    ) -> tuple[int, dict[str, Any]]:
        """Ask for a rollback; (HTTP status, answer)."""
        ...

    def circuit(self) -> dict[str, Any]: ...

    def reset_circuit(self) -> dict[str, Any]: ...


def collect(fetch: Callable[[int, str | None], Page], limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` items, following ``next`` cursors past one page."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while len(items) < limit:
        page = fetch(min(limit - len(items), PAGE_SIZE), cursor)
        items.extend(page.items)
        # An empty page ends it too: a server that keeps handing out cursors with
        # nothing in them must not keep us looping.
        if page.next_cursor is None or not page.items:
            break
        cursor = page.next_cursor
    return items[:limit]


def _no_remediation(remediation_id: str) -> CliError:
    return CliError(f"no remediation {remediation_id!r}", code=EXIT_FAILED)


class ApiBackend:
    def __init__(self, client: ApiClient) -> None:
        self._client = client

    @classmethod
    @contextmanager
    def opened(cls, options: ApiOptions) -> Iterator[ApiBackend]:
        yield cls(ApiClient(options))

    def signals(self, *, service: str | None, limit: int, cursor: str | None) -> Page:
        query = {"service": service, "limit": limit, "cursor": cursor}
        return _page(self._client.get_json("/api/v1/signals", query))

    def remediations(
        self, *, service: str | None, status: str | None, limit: int, cursor: str | None
    ) -> Page:
        query = {"service": service, "status": status, "limit": limit, "cursor": cursor}
        return _page(self._client.get_json("/api/v1/remediations", query))

    def remediation(self, remediation_id: str) -> dict[str, Any]:
        return _object(self._client.get_json(_remediation_path(remediation_id)))

    def record(self, remediation_id: str, *, fmt: RecordFormat) -> str:
        return self._client.get_text(_remediation_path(remediation_id) + "/record", {"format": fmt})

    def approve(self, remediation_id: str, *, comment: str | None) -> dict[str, Any]:
        # Who approves is the credential's principal; the server never takes it from here.
        body = {} if comment is None else {"comment": comment}
        return _object(self._client.post_json(_remediation_path(remediation_id) + "/approve", body))

    def answer(self, remediation_id: str, verb: str, *, comment: str | None) -> dict[str, Any]:
        body = {} if comment is None else {"comment": comment}
        return _object(self._client.post_json(_remediation_path(remediation_id) + f"/{verb}", body))

    def request(
        self, body: dict[str, Any], *, idempotency_key: str | None
    ) -> tuple[int, dict[str, Any]]:
        headers = {} if idempotency_key is None else {"Idempotency-Key": idempotency_key}
        answer = _object(self._client.post_json("/api/v1/rollback-requests", body, headers=headers))
        # 202 carries no status yet: the request is journaled, not decided.
        return (202 if answer.get("status") is None else 201), answer

    def circuit(self) -> dict[str, Any]:
        return _object(self._client.get_json("/api/v1/circuit"))

    def reset_circuit(self) -> dict[str, Any]:
        return _object(self._client.post_json("/api/v1/circuit/reset", {}))


def _remediation_path(remediation_id: str) -> str:
    return "/api/v1/remediations/" + quote(remediation_id, safe="")


def _page(document: Any) -> Page:
    body = _object(document)
    items, next_cursor = body.get("items"), body.get("next")
    if not isinstance(items, list) or not (next_cursor is None or isinstance(next_cursor, str)):
        raise CliError("the daemon answered a page without items/next", code=EXIT_FAILED)
    return Page(items=items, next_cursor=next_cursor)


def _object(document: Any) -> dict[str, Any]:
    if not isinstance(document, dict):
        raise CliError("the daemon answered something other than a JSON object", code=EXIT_FAILED)
    return document


def local_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


class JournalBackend:
    """The journal file, opened once for the whole command (one event loop throughout).

    ``actor`` is what approvals and resets record: the local OS user, break-glass.
    """

    def __init__(self, journal: CliJournal, *, actor: str, rules_path: Path | None = None) -> None:
        self._journal = journal
        self.actor = actor
        # The catalog names each service's owner for the record, as the daemon's does.
        self._rules_path = rules_path
        self._runner = asyncio.Runner()

    @classmethod
    @contextmanager
    def opened(
        cls, url: str | SecretStr, *, actor: str, rules_path: Path | None = None
    ) -> Iterator[JournalBackend]:
        from remediator.journal import journal_from_url

        with cls(journal_from_url(url), actor=actor, rules_path=rules_path) as backend:
            yield backend

    def __enter__(self) -> Self:
        try:
            self._run(self._journal.open())
        except BaseException:
            self._runner.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self._run(self._journal.close())
        finally:
            self._runner.close()

    def _run(self, work: Coroutine[Any, Any, _T]) -> _T:
        return self._runner.run(work)

    def signals(self, *, service: str | None, limit: int, cursor: str | None) -> Page:
        page = self._run(self._journal.list_signals(service=service, limit=limit, cursor=cursor))
        return Page(items=page.items, next_cursor=page.next_cursor)

    def remediations(
        self, *, service: str | None, status: str | None, limit: int, cursor: str | None
    ) -> Page:
        page = self._run(
            self._journal.list_remediations(
                service=service, status=_status(status), limit=limit, cursor=cursor
            )
        )
        return Page(items=[item.to_api() for item in page.items], next_cursor=page.next_cursor)

    def remediation(self, remediation_id: str) -> dict[str, Any]:
        return self._remediation(remediation_id).to_api()

    def _remediation(self, remediation_id: str) -> Remediation:
        item = self._run(self._journal.get_remediation(remediation_id))
        if item is None:
            raise _no_remediation(remediation_id)
        return item

    def record(self, remediation_id: str, *, fmt: RecordFormat) -> str:
        from remediator.domain.record import render
        from remediator.domain.record_build import record_from_journal

        item = self._remediation(remediation_id)
        signal = self._run(self._journal.get_signal(item.signal_id))
        analysis = self._run(self._journal.record_analysis(item.id))
        record = record_from_journal(
            item, signal, owner=self._owner(item.service), analysis=analysis
        )
        return render(record, fmt=fmt)

    def _owner(self, service: str) -> str | None:
        """The owner the catalog names; None (said on stderr) when it cannot be read:
        a record without its owner is still worth printing."""
        if self._rules_path is None:
            return None
        from remediator.rulefiles import load_rule_pack_from_path

        try:
            pack = load_rule_pack_from_path(self._rules_path)
        except ConfigError as exc:
            print(f"remediator: the record's owner is not shown: {exc} (give --rules)",
                  file=sys.stderr)  # fmt: skip
            return None
        spec = pack.services.get(service)
        return spec.owner if spec is not None else None

    def approve(self, remediation_id: str, *, comment: str | None) -> dict[str, Any]:
        if comment is not None:
            raise CliError("--comment is recorded over the API only (give --url)", code=EXIT_USAGE)
        approved = self._run(
            self._journal.approve_remediation(remediation_id, by=self.actor, at=_now())
        )
        item = self._remediation(remediation_id)
        if not approved:
            raise CliError(
                f"{remediation_id} is {item.status.value}, not awaiting approval",
                code=EXIT_FAILED,
            )
        return item.to_api()

    def answer(self, remediation_id: str, verb: str, *, comment: str | None) -> dict[str, Any]:
        if verb != "cancel":
            raise CliError(f"{verb} goes through the daemon's API only (give --url)",
                           code=EXIT_USAGE)  # fmt: skip
        if comment is not None:
            raise CliError("--comment is recorded over the API only (give --url)", code=EXIT_USAGE)
        # Break-glass: withdrawn in the journal; no notice is queued from here.
        cancelled = self._run(
            self._journal.cancel_remediation(remediation_id, by=self.actor, at=_now(),
                                             reason="break-glass, from the journal file")
        )  # fmt: skip
        item = self._remediation(remediation_id)
        if not cancelled:
            raise CliError(
                f"{remediation_id} is {item.status.value}; only a plan awaiting approval, or "
                "planned and not yet started, can be cancelled",
                code=EXIT_FAILED,
            )
        return item.to_api()

    def request(
        self, body: dict[str, Any], *, idempotency_key: str | None
    ) -> tuple[int, dict[str, Any]]:
        raise CliError(
            "rollback requests go through the daemon's API, which checks them and lets the "
            "engine decide them (give --url)",
            code=EXIT_USAGE,
        )

    def circuit(self) -> dict[str, Any]:
        return _circuit_body(self._run(self._journal.circuit()))

    def reset_circuit(self) -> dict[str, Any]:
        # Who: the local actor, as the API records its principal; the reason says how.
        reason = f"reset by {self.actor} from the journal file (break-glass)"
        self._run(self._journal.set_circuit(open=False, reason=reason, at=_now(), by=self.actor))
        return self.circuit()


def _now() -> datetime:
    return datetime.now(UTC)


def _status(text: str | None) -> RemediationStatus | None:
    """The ``--status`` filter; a usage error names the statuses there are."""
    if text is None:
        return None
    try:
        return RemediationStatus(text)
    except ValueError:
        known = ", ".join(status.value for status in RemediationStatus)
        raise CliError(f"--status: one of {known}, got {text!r}", code=EXIT_USAGE) from None


def _circuit_body(record: CircuitRecord) -> dict[str, Any]:
    """The API's shape of the breaker (``GET /api/v1/circuit``)."""
    return {
        "open": record.open,
        "reason": record.reason,
        "changed_at": record.changed_at.isoformat() if record.changed_at else None,
        "changed_by": record.changed_by,
    }
