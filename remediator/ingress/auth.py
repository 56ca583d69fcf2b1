"""Authentication for the HTTP listener: the principals file, credentials, throttling.

A request is authenticated by its ``Authorization`` header (a bearer token of a
principal, or the webhook's basic-auth pair) or, without that header, by the verified
TLS client certificate its connection presented (mTLS). Tokens are kept only as SHA-256
digests and compared in constant time. Nothing here logs, echoes or reprs a secret.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from remediator.domain.auth import (
    APPROVER_ROLE_PATTERN,
    PRINCIPAL_NAME_PATTERN,
    Principal,
    Role,
    digest_of_hash,
    matching_digest,
    token_digest,
)
from remediator.domain.errors import ConfigError
from remediator.domain.slack_interactions import SLACK_USER_PATTERN

WEBHOOK_PRINCIPAL = "webhook"
# Without any credential configured (loopback only, or --insecure-no-auth) every caller
# is this principal, as before principals existed; it holds no approver role.
ANONYMOUS = Principal(name="anonymous", roles=frozenset({Role.ADMIN}))


class AuthFailure(StrEnum):
    MISSING = "missing"  # no Authorization header and no mapped client certificate
    INVALID = "invalid"  # a credential was presented and it is not one we know


# -- the principals file -----------------------------------------------------------------

_Name = Annotated[str, StringConstraints(pattern=f"^{PRINCIPAL_NAME_PATTERN.pattern}$")]
_ApproverRole = Annotated[str, StringConstraints(pattern=f"^{APPROVER_ROLE_PATTERN.pattern}$")]
_Subject = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
_SlackUser = Annotated[str, StringConstraints(pattern=f"^{SLACK_USER_PATTERN.pattern}$")]


class _Entry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: _Name
    roles: tuple[Role, ...] = Field(min_length=1)
    approver_roles: tuple[_ApproverRole, ...] = ()
    # sha256:<hex> of each bearer token (`remediator auth hash-token`)
    tokens: tuple[str, ...] = ()
    # a TLS client certificate's whole subject, RFC 4514 (as `openssl x509 -noout
    # -subject -nameopt RFC2253` prints it), or its common name alone
    certificate_subjects: tuple[_Subject, ...] = ()
    certificate_cns: tuple[_Subject, ...] = ()
    # Slack member ids (U… or W…, "Copy member ID" in a Slack profile) whose clicks on
    # Approve and Reject act as this principal; Slack's request signature vouches for them
    slack_users: tuple[_SlackUser, ...] = ()


class _File(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    principals: tuple[_Entry, ...] = Field(min_length=1)


@dataclass(frozen=True, slots=True, kw_only=True)
class PrincipalCredentials:
    """One principal and what authenticates it; token digests only, never tokens."""

    principal: Principal
    token_digests: tuple[bytes, ...] = field(default=(), repr=False)
    certificate_subjects: tuple[str, ...] = ()
    certificate_cns: tuple[str, ...] = ()
    slack_users: tuple[str, ...] = ()
    source: str = ""  # where it was configured, for error messages

    def __post_init__(self) -> None:
        if not self.source:
            object.__setattr__(self, "source", f"principal '{self.principal.name}'")


def load_principals(path: Path) -> list[PrincipalCredentials]:
    """Read and check a principals file; ConfigError naming the file and the entry.

    Errors never quote a value of the file: a token pasted where its hash belongs
    would otherwise reach the pod log.
    """
    origin = f"auth.principals_file {path}"
    try:
        document = yaml.safe_load(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"{origin}: cannot be read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: not valid YAML ({_yaml_problem(exc)})") from None
    if not isinstance(document, dict):
        raise ConfigError(
            f"{origin}: expected a mapping with a `principals:` list (see docs/security.md)"
        )
    try:
        parsed = _File.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(f"{origin}:\n{_describe(exc, document)}") from None
    entries = [_credentials(entry, index, origin) for index, entry in enumerate(parsed.principals)]
    check_unique(entries, origin=origin)
    return entries


def _credentials(entry: _Entry, index: int, origin: str) -> PrincipalCredentials:
    where = f"{origin}: principals[{index}] ({entry.name})"
    digests = []
    for number, text in enumerate(entry.tokens):
        try:
            digests.append(digest_of_hash(text))
        except ValueError as exc:
            raise ConfigError(
                f"{where}.tokens[{number}]: {exc}; make one with `remediator auth hash-token`"
            ) from None
    if not (digests or entry.certificate_subjects or entry.certificate_cns or entry.slack_users):
        raise ConfigError(
            f"{where}: no credential (give tokens, certificate_subjects, certificate_cns or "
            "slack_users)"
        )
    return PrincipalCredentials(
        principal=Principal(
            name=entry.name,
            roles=frozenset(entry.roles),
            approver_roles=frozenset(entry.approver_roles),
        ),
        token_digests=tuple(digests),
        certificate_subjects=entry.certificate_subjects,
        certificate_cns=entry.certificate_cns,
        slack_users=entry.slack_users,
        source=f"principals[{index}] ({entry.name})",
    )


def check_unique(entries: Sequence[PrincipalCredentials], *, origin: str) -> None:
    """Each name, token and certificate belongs to one principal, listed once."""
    owners: dict[tuple[str, Any], int] = {}
    for index, entry in enumerate(entries):
        keys: list[tuple[str, Any, str]] = [("name", entry.principal.name, "the name")]
        keys += [("token", d, "a token") for d in entry.token_digests]
        keys += [("subject", s, "a certificate subject") for s in entry.certificate_subjects]
        keys += [("cn", c, "a certificate CN") for c in entry.certificate_cns]
        keys += [("slack", u, "a Slack user") for u in entry.slack_users]
        for kind, value, what in keys:
            owner = owners.setdefault((kind, value), index)
            if owner == index and kind != "name" and keys.count((kind, value, what)) > 1:
                raise ConfigError(f"{origin}: {entry.source} lists {what} twice")
            if owner != index:
                raise ConfigError(
                    f"{origin}: {entry.source} has {what} that {entries[owner].source} has too"
                )


def _describe(exc: ValidationError, document: Mapping[str, Any]) -> str:
    """One line per problem, naming the entry by index and name; never the input."""
    lines = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = error["loc"]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
        if len(loc) >= 2 and loc[0] == "principals" and isinstance(loc[1], int):
            name = _entry_name(document, loc[1])
            if name:
                where = f"principals[{loc[1]}] ({name})" + where.removeprefix(
                    f"principals[{loc[1]}]"
                )
        message = str(error["msg"])
        if error["type"] == "enum":
            message = f"unknown role (expected one of {', '.join(r.value for r in Role)})"
        elif error["type"] == "extra_forbidden":
            message = "unknown key"
        elif error["type"] == "string_pattern_mismatch":
            message = "letters, digits and . _ @ + - only, at most 100 characters"
        lines.append(f"  {where}: {message}")
    return "\n".join(lines)


def _entry_name(document: Mapping[str, Any], index: int) -> str | None:
    principals = document.get("principals")
    if isinstance(principals, list) and index < len(principals):
        entry = principals[index]
        if isinstance(entry, dict):
            name = entry.get("name")
            if isinstance(name, str) and PRINCIPAL_NAME_PATTERN.fullmatch(name):
                return name
    return None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        return f"{where}{exc.problem or exc.context or type(exc).__name__}"
    return type(exc).__name__


# -- certificates ------------------------------------------------------------------------

# Python's ssl names attributes by their long names; RFC 4514 uses these short ones.
_SHORT_NAMES = {
    "commonName": "CN",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
}
_ESCAPED = frozenset(',+"\\<>;')


def subject_text(subject: Sequence[Sequence[tuple[str, str]]]) -> str:
    """A certificate subject (``getpeercert()['subject']``) as RFC 4514 text:
    most specific attribute first, e.g. ``CN=alice,OU=sre,O=Example``."""
    rdns = []
    for rdn in reversed(subject):
        rdns.append("+".join(f"{_SHORT_NAMES.get(k, k)}={_escape(v)}" for k, v in rdn))
    return ",".join(rdns)


def _escape(value: str) -> str:
    out = "".join(f"\\{c}" if c in _ESCAPED else ("\\00" if c == "\0" else c) for c in value)
    if out.startswith((" ", "#")):
        out = "\\" + out
    if out.endswith(" ") and not out.endswith("\\ "):
        out = out[:-1] + "\\ "
    return out


def common_names(subject: Sequence[Sequence[tuple[str, str]]]) -> list[str]:
    return [v for rdn in subject for k, v in rdn if k == "commonName"]


# -- authentication ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookCredential:
    """``REMEDIATOR_WEBHOOK_TOKEN`` and/or the basic-auth pair: the ingest-only principal."""

    bearer_token: str | None = field(default=None, repr=False)  # secrets stay out of reprs
    basic_user: str | None = None
    basic_password: str | None = field(default=None, repr=False)

    @property
    def configured(self) -> bool:
        return self.bearer_token is not None or self.basic_user is not None


class Authenticator:
    """Maps a request's credential to its principal."""

    def __init__(
        self,
        *,
        principals: Sequence[PrincipalCredentials] = (),
        webhook: WebhookCredential | None = None,
    ) -> None:
        entries = list(principals)
        self._basic: tuple[bytes, bytes, Principal] | None = None
        if webhook is not None and webhook.configured:
            ingest = Principal(name=WEBHOOK_PRINCIPAL, roles=frozenset({Role.INGEST}))
            token = webhook.bearer_token
            entries.append(
                PrincipalCredentials(
                    principal=ingest,
                    token_digests=(token_digest(token.encode()),) if token else (),
                    source="the webhook credential (webhook_token, webhook_username)",
                )
            )
            if webhook.basic_user is not None and webhook.basic_password is not None:
                self._basic = (
                    token_digest(webhook.basic_user.encode()),
                    token_digest(webhook.basic_password.encode()),
                    ingest,
                )
        check_unique(entries, origin="credentials (auth.principals_file and webhook_*)")
        self.enabled = bool(entries)
        self.principals = tuple(e.principal for e in entries)
        self._digests = [d for e in entries for d in e.token_digests]
        self._owners = [e.principal for e in entries for _ in e.token_digests]
        self._subjects = {s: e.principal for e in entries for s in e.certificate_subjects}
        self._cns = {c: e.principal for e in entries for c in e.certificate_cns}
        self._slack_users = {u: e.principal for e in entries for u in e.slack_users}

    def __repr__(self) -> str:
        names = ", ".join(p.name for p in self.principals)
        return f"Authenticator(principals=[{names}])"

    def challenge(self) -> str:
        schemes = ['Bearer realm="remediator"']
        if self._basic is not None:
            schemes.append('Basic realm="remediator"')
        return ", ".join(schemes)

    def authenticate(
        self, header: str | None, certificate: Mapping[str, Any] | None = None
    ) -> Principal | AuthFailure:
        """The header decides when there is one; else a verified client certificate."""
        if not self.enabled:
            return ANONYMOUS
        if header:
            return self._from_header(header) or AuthFailure.INVALID
        if certificate:
            return self._from_certificate(certificate) or AuthFailure.INVALID
        return AuthFailure.MISSING

    @property
    def slack_users(self) -> int:
        """How many Slack users act as a principal."""
        return len(self._slack_users)

    def slack_principal(self, user_id: str) -> Principal | None:
        """The principal a Slack user acts as (``slack_users`` of the principals file);
        only ever asked after Slack's signature on the click was verified."""
        return self._slack_users.get(user_id)

    def _from_header(self, header: str) -> Principal | None:
        try:
            # aiohttp decodes header bytes as UTF-8 with surrogateescape; this gives the
            # bytes back, so a header holding any bytes is compared, never an error.
            raw = header.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            return None
        scheme, _, credentials = raw.partition(b" ")
        scheme = scheme.lower()
        credentials = credentials.strip()
        if scheme == b"bearer" and credentials:
            index = matching_digest(token_digest(credentials), self._digests)
            return None if index is None else self._owners[index]
        if scheme == b"basic" and self._basic is not None:
            return self._from_basic(credentials)
        return None

    def _from_basic(self, credentials: bytes) -> Principal | None:
        assert self._basic is not None
        try:
            decoded = base64.b64decode(credentials, validate=True)
        except (binascii.Error, ValueError):
            return None
        user, sep, password = decoded.partition(b":")
        user_digest, password_digest, principal = self._basic
        # Both comparisons always run, so timing doesn't tell which part was wrong.
        user_ok = hmac.compare_digest(token_digest(user), user_digest)
        password_ok = hmac.compare_digest(token_digest(password), password_digest)
        return principal if sep and user_ok and password_ok else None

    def _from_certificate(self, certificate: Mapping[str, Any]) -> Principal | None:
        subject = certificate.get("subject") or ()
        principal = self._subjects.get(subject_text(subject))
        if principal is not None:
            return principal  # the whole subject is more specific than a CN
        names = common_names(subject)
        # A subject with several CNs names nobody by CN alone.
        return self._cns.get(names[0]) if len(names) == 1 else None


# -- failed authentication ---------------------------------------------------------------


class FailedAuthLimiter:
    """At most ``max_failures`` failed authentications per client address per window.

    Past that the address is answered 429 without its credential being looked at,
    until its oldest failure in the window is older than the window. Memory is bounded:
    at most ``max_clients`` addresses are remembered, the least recently failing one
    forgotten first.
    """

    def __init__(
        self,
        *,
        max_failures: int,
        window_seconds: float,
        max_clients: int,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window = window_seconds
        self.max_clients = max_clients
        self._monotonic = monotonic
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failures)

    def retry_after(self, client: str) -> int | None:
        """Seconds until ``client`` may try again, or None when it may now."""
        times = self._failures.get(client)
        if times is None or len(times) < self.max_failures:
            return None
        waited = self._monotonic() - times[0]
        if waited >= self.window:
            return None
        return max(1, math.ceil(self.window - waited))

    def failed(self, client: str) -> None:
        now = self._monotonic()
        times = self._failures.get(client)
        if times is None:
            times = self._failures[client] = deque(maxlen=self.max_failures)
        else:
            self._failures.move_to_end(client)
        times.append(now)
        self._forget(now)

    def _forget(self, now: float) -> None:
        """Drop addresses whose last failure left the window, then the oldest past the cap."""
        while self._failures:
            oldest, times = next(iter(self._failures.items()))
            if now - times[-1] < self.window and len(self._failures) <= self.max_clients:
                return
            del self._failures[oldest]


def principals_summary(principals: Iterable[Principal]) -> str:
    """For the start-up log: names and roles, nothing secret."""
    return "; ".join(f"{p.name} ({p.roles_text()})" for p in principals) or "none"
