"""Settings: built once at the entry point, then passed down.

Precedence, highest first: command-line flags, environment (``REMEDIATOR_`` prefix,
``__`` between nested names), the YAML file given with ``--config``, defaults.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from contextvars import ContextVar
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    YamlConfigSettingsSource,
)

from remediator.domain.approvals import ApprovalConfig
from remediator.domain.errors import ConfigError
from remediator.domain.failpoints import Failpoints
from remediator.domain.limits import KIB, InputLimits
from remediator.domain.retention import RetentionPolicy
from remediator.domain.signals import DEFAULT_NAMESPACE_LABELS, DEFAULT_SERVICE_LABELS

DEFAULT_LISTEN = "127.0.0.1:9095"
DEFAULT_JOURNAL = "sqlite:///var/remediator.db"
JOURNAL_SCHEMES = ("sqlite:///", "postgresql://", "postgres://")
MIB = 1024 * 1024

_config_file: ContextVar[Path | None] = ContextVar("remediator_config_file", default=None)


_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^/@\s]*@")
# libpq also takes the password as a parameter: postgresql://u@db/x?password=...
_PARAM_PASSWORD = re.compile(r"(?P<head>[?&][^=&\s]*password=)[^&\s]*", re.IGNORECASE)


def _mask_url_passwords(value: Any) -> Any:
    if isinstance(value, str):
        value = _URL_PASSWORD.sub(r"\g<head>***@", value)
        return _PARAM_PASSWORD.sub(r"\g<head>***", value)
    if isinstance(value, dict):
        return {key: _mask_url_passwords(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_mask_url_passwords(item) for item in value]
    return value


def _is_path(value: Any) -> bool:
    """Set, and of a type the secret file can be read from (others fail validation)."""
    return isinstance(value, str | Path) and bool(str(value))


class _Group(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class HttpSettings(_Group):
    """The listener: webhook, API, /healthz, /readyz and /metrics (docs/security.md)."""

    listen: str = Field(
        DEFAULT_LISTEN, description="HOST:PORT the HTTP server binds (flag --listen)."
    )
    # Alertmanager never retries a 4xx, so a 413 on an alert storm loses alerts:
    # the limit sits far above aiohttp's 1 MiB default.
    body_limit_bytes: int = Field(16 * MIB, gt=0, description="Largest request body accepted.")
    retry_after_seconds: int = Field(
        5, ge=1, description="Retry-After sent with 503 (journal unavailable or draining)."
    )
    insecure_no_auth: bool = Field(
        False, description="Allow binding a non-loopback address without any credential."
    )
    public_url: str | None = Field(
        None,
        description="How people reach this daemon (e.g. https://remediator.example.com); "
        "rollback records in Slack and email link to it.",
    )
    tls_cert_file: Path | None = Field(
        None, description="PEM certificate (chain) of the listener: serve HTTPS (TLS 1.2+)."
    )
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file.")
    tls_client_ca_file: Path | None = Field(
        None,
        description="PEM CA bundle: every client must present a certificate it signed (mTLS); "
        "the certificate's subject may name a principal (auth.principals_file).",
    )

    @field_validator("listen")
    @classmethod
    def _valid_listen(cls, value: str) -> str:
        host_port(value)
        return value

    @model_validator(mode="after")
    def _tls_complete(self) -> HttpSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file must be set together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file needs tls_cert_file and tls_key_file (HTTPS)")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None

    @property
    def host(self) -> str:
        return host_port(self.listen)[0]

    @property
    def port(self) -> int:
        return host_port(self.listen)[1]


class JournalSettings(_Group):
    """Where everything is recorded: SQLite for one replica, PostgreSQL for several."""

    # A secret: a PostgreSQL URL may hold a password (prefer url_file, a mounted Secret).
    url: SecretStr = Field(
        SecretStr(DEFAULT_JOURNAL),
        # The default is no secret; a SecretStr default would otherwise show as stars.
        json_schema_extra={"default": DEFAULT_JOURNAL},
        description="sqlite:///relative/path or sqlite:////absolute/path (one replica), or "
        "postgresql://USER:PASSWORD@HOST:PORT/DB?sslmode=verify-full (several replicas).",
    )
    url_file: Path | None = Field(
        None, description="File holding the journal URL (a mounted Secret); url wins if set."
    )
    # Alertmanager resends for as long as an alert fires; keys must outlive a day of resends.
    retention_hours: float = Field(
        24.0 * 7,
        ge=24.0,
        description="How long signals, their idempotency keys and their decisions are kept.",
    )
    max_batch: int = Field(
        5000, ge=1, description="Most alerts written in one transaction (group commit)."
    )
    call_timeout_seconds: float = Field(
        5.0,
        gt=0,
        description="Longest any journal read or write may take; past it the caller gets a "
        "temporary error (a webhook answers 503 with Retry-After).",
    )
    prune_batch_size: int = Field(
        5000,
        ge=1,
        description="Most old signals deleted per transaction when pruning, so webhook "
        "writes interleave with a large prune.",
    )
    heartbeat_seconds: float = Field(
        5.0,
        gt=0,
        description="How often this instance commits its heartbeat to the journal; other "
        "replicas tell a live instance's claims from a dead one's by it.",
    )
    claim_stale_seconds: float = Field(
        30.0,
        gt=0,
        description="An instance whose heartbeat is older than this is gone: the plans it "
        "claimed are taken over (each still waits for its service's Lease). At least 3 x "
        "heartbeat_seconds.",
    )
    recovery_interval_seconds: float = Field(
        10.0,
        gt=0,
        description="How often the executor looks for plans left by gone instances.",
    )

    @model_validator(mode="after")
    def _heartbeats_outpace_staleness(self) -> JournalSettings:
        # A live instance must beat several times within the window, or a slow commit
        # would make it look gone and its running plans be taken over.
        if self.claim_stale_seconds < 3 * self.heartbeat_seconds:
            raise ValueError(
                "claim_stale_seconds must be at least 3 x heartbeat_seconds (a live "
                "instance must not look gone between two beats)"
            )
        return self

    pool_size: int = Field(
        10,
        ge=2,
        description="PostgreSQL: most connections one replica opens (replicas x pool_size "
        "must stay below the server's max_connections).",
    )

    @model_validator(mode="before")
    @classmethod
    def _url_file(cls, data: Any) -> Any:
        if isinstance(data, dict) and _is_path(data.get("url_file")) and not data.get("url"):
            data = {**data, "url": _read_secret(Path(data["url_file"]), "url")}
        return data

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().startswith(JOURNAL_SCHEMES):
            # The value is not quoted: it may be a password pasted in the wrong place.
            raise ValueError(
                "journal URL must start with sqlite:/// (e.g. sqlite:///var/remediator.db) "
                "or postgresql:// (e.g. postgresql://remediator@db:5432/remediator)"
            )
        return value

    @property
    def postgres(self) -> bool:
        return not self.url.get_secret_value().startswith("sqlite:///")

    @property
    def shown_url(self) -> str:
        """The URL for logs: the password masked."""
        return str(_mask_url_passwords(self.url.get_secret_value()))

    @property
    def sqlite_path(self) -> Path:
        return Path(self.url.get_secret_value().removeprefix("sqlite:///"))


class SignalSettings(_Group):
    """Which labels of an alert or event name its service and namespace."""

    service_labels: tuple[str, ...] = Field(
        DEFAULT_SERVICE_LABELS,
        min_length=1,
        description="Labels naming the service; the first one an alert carries wins.",
    )
    namespace_labels: tuple[str, ...] = Field(
        DEFAULT_NAMESPACE_LABELS,
        min_length=1,
        description="Labels naming the namespace; the first one an alert carries wins.",
    )


class LimitsSettings(_Group):
    """What one webhook request or Kafka event may carry (docs/operations.md, Limits).

    Past a limit the webhook answers 400 naming the field (413 for too many alerts) and
    a Kafka event goes to the dead-letter topic; nothing of it is journaled.
    """

    alerts_per_request: int = Field(
        5000,
        ge=1,
        description="Most alerts in one webhook request (set the receiver's max_alerts "
        "to at most this: Alertmanager then truncates instead of being refused).",
    )
    labels_per_signal: int = Field(64, ge=1, description="Most labels on one alert or event.")
    annotations_per_signal: int = Field(
        64, ge=1, description="Most annotations on one alert or event."
    )
    name_bytes: int = Field(256, ge=1, description="Longest label or annotation name.")
    label_value_bytes: int = Field(4 * KIB, ge=1, description="Longest label value.")
    annotation_value_bytes: int = Field(16 * KIB, ge=1, description="Longest annotation value.")
    field_bytes: int = Field(
        16 * KIB,
        ge=1,
        description="Longest other text kept with a signal (receiver, groupKey, generatorURL, "
        "externalURL, fingerprint, CloudEvents id).",
    )
    event_bytes: int = Field(256 * KIB, ge=1, description="Largest Kafka event (record value).")
    response_bytes: int = Field(
        4 * MIB,
        ge=1,
        description="Most bytes of items in one page of /api/v1/signals or "
        "/api/v1/remediations; the rest is on the next page (`next`).",
    )

    def input_limits(self) -> InputLimits:
        return InputLimits(**self.model_dump(exclude={"response_bytes"}))


class AuthSettings(_Group):
    """Who may call the API (docs/security.md)."""

    principals_file: Path | None = Field(
        None,
        description="YAML file of principals: names, roles, approver roles, token hashes, "
        "client-certificate subjects (a mounted Secret or ConfigMap).",
    )
    max_failures: int = Field(
        10,
        ge=1,
        description="Failed authentications one client address may make within "
        "failure_window_seconds; past that it is answered 429 with Retry-After.",
    )
    failure_window_seconds: float = Field(
        60.0, gt=0, description="The window max_failures is counted in."
    )
    tracked_clients: int = Field(
        10000, ge=1, description="Most client addresses whose failures are remembered."
    )
    metrics_need_read: bool = Field(
        False, description="/metrics asks for the read role (default: open, like /healthz)."
    )


def _comma_list(value: Any) -> Any:
    """Accept "a:9092,b:9092" (flags, env) as well as a YAML/JSON list."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


CommaList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_comma_list)]


class KafkaSettings(_Group):
    """Deploy events in, outcome events out. Empty bootstrap_servers: webhook-only."""

    bootstrap_servers: CommaList = Field(
        (),
        description="Brokers, HOST:PORT each (flag --kafka-bootstrap); none: no Kafka, "
        "the webhook is the only intake.",
    )
    deploy_topics: CommaList = Field(("deployments",), description="Topics of deploy events.")
    outcome_topic: str = Field("remediator.outcomes", description="Topic for outcome events.")
    group_id: str = Field("remediator", description="Consumer group of every replica.")
    client_id: str = Field(
        "remediator", description="Client id the brokers see (their logs and quotas)."
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT",
        description="How to reach the brokers: SSL and SASL_SSL use TLS (verified against "
        "ssl_cafile, else the system trust store); SASL_* need sasl_mechanism, "
        "sasl_username and sasl_password.",
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism (with a SASL_* security_protocol)."
    )
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(None, description="SASL password.")
    ssl_cafile: Path | None = Field(
        None, description="PEM CA bundle the brokers' certificates are verified against."
    )
    ssl_certfile: Path | None = Field(
        None, description="PEM client certificate, when the brokers ask for one (mTLS)."
    )
    ssl_keyfile: Path | None = Field(None, description="PEM private key of ssl_certfile.")
    max_delivery_attempts: int = Field(
        5, ge=1, description="Failures of one message before it goes to its dead-letter topic."
    )
    dlq_suffix: str = Field(
        ".dlq",
        min_length=1,
        description="Dead-letter topic of a deploy topic: its name plus this suffix.",
    )

    @property
    def enabled(self) -> bool:
        return bool(self.bootstrap_servers)

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL_") and (
            self.sasl_mechanism is None or self.sasl_username is None or self.sasl_password is None
        ):
            raise ValueError(
                "a SASL_* security_protocol needs sasl_mechanism, sasl_username and sasl_password"
            )
        return self


class KubernetesSettings(_Group):
    """Where plans are carried out. No reachable cluster: plans are recorded as dry runs."""

    kubeconfig: Path | None = Field(
        None, description="kubeconfig file; default: in-cluster config, else ~/.kube/config."
    )
    context: str | None = Field(None, description="kubeconfig context (default: current).")
    instance_id: str = Field(
        default_factory=socket.gethostname,
        description="Holder name in the per-service Leases (default: the hostname).",
    )
    lease_duration_seconds: int = Field(
        900, ge=15, description="How long a service's Lease outlives a silent holder."
    )
    rollout_timeout_seconds: float = Field(
        300.0, gt=0, description="Longest wait for a rollout to complete before a plan step fails."
    )
    health_timeout_seconds: float = Field(
        10.0, gt=0, description="Longest one check of a service's health URL may take."
    )
    health_grace_seconds: float = Field(
        60.0,
        ge=0,
        description="After a change, how long a service's health URL may keep failing "
        "(checked every 2 s) before verification fails and the plan ends needs_human.",
    )
    max_concurrent_plans: int = Field(
        4,
        ge=1,
        description="Plans changing the cluster at once (all services). A plan waiting for "
        "its rollout, verifying or recording evidence gives its turn to the next meanwhile.",
    )
    helm_binary: str = Field("helm", description="helm executable for helm rollbacks.")
    lock_retry_base_seconds: float = Field(
        2.0,
        gt=0,
        description="A service whose Lease another replica holds is asked again after a "
        "random wait between half and all of base x 2^n seconds (n: refusals so far).",
    )
    lock_retry_max_seconds: float = Field(
        60.0, gt=0, description="Cap of that wait (at least lock_retry_base_seconds)."
    )

    @model_validator(mode="after")
    def _lock_retry_ordered(self) -> KubernetesSettings:
        if self.lock_retry_max_seconds < self.lock_retry_base_seconds:
            raise ValueError("lock_retry_max_seconds must be >= lock_retry_base_seconds")
        return self


class SlackSettings(_Group):
    """One message per remediation, updated in place. No token: Slack is off."""

    token: SecretStr | None = Field(None, description="Bot token (xoxb-...).")
    token_file: Path | None = Field(
        None, description="File holding the bot token (a mounted Secret); token wins if set."
    )
    base_url: str = Field("https://slack.com/api/", description="Web API base URL.")
    default_channel: str | None = Field(None, description="Channel id used when no route matches.")
    channels_by_service: dict[str, str] = Field(
        {}, description="Channel id per service; a service listed here beats its severity."
    )
    channels_by_severity: dict[str, str] = Field(
        {}, description="Channel id per alert severity (lower case), used before default_channel."
    )
    signing_secret: SecretStr | None = Field(
        None,
        description="The Slack app's signing secret: with it, a plan waiting for approval "
        "gets Approve and Reject buttons, and POST /api/v1/slack/interactions takes the "
        "clicks (each verified against this secret). Without it: no buttons.",
    )
    signing_secret_file: Path | None = Field(
        None, description="File holding the signing secret (a mounted Secret)."
    )
    team_id: str | None = Field(
        None,
        pattern=r"^T[A-Z0-9]{2,30}$",
        description="Only clicks from this Slack workspace (team id T…) are taken.",
    )

    @model_validator(mode="before")
    @classmethod
    def _secret_files(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        problems = []  # every unreadable file is named, not only the first
        for name in ("token", "signing_secret"):
            if _is_path(data.get(f"{name}_file")) and not data.get(name):
                try:
                    data = {**data, name: _read_secret(Path(data[f"{name}_file"]), name)}
                except ValueError as exc:
                    problems.append(str(exc))
        if problems:
            raise ValueError("\n".join(problems))
        return data

    @model_validator(mode="after")
    def _channel_when_on(self) -> SlackSettings:
        if self.token is not None and self.default_channel is None:
            raise ValueError("default_channel is required when a token is set")
        if self.signing_secret is not None and self.token is None:
            raise ValueError(
                "signing_secret needs a token too: the buttons live on the messages the "
                "bot posts, and a click is answered through the Web API"
            )
        return self

    @property
    def enabled(self) -> bool:
        return self.token is not None

    @property
    def interactive(self) -> bool:
        """Approve and Reject buttons, and the endpoint Slack posts their clicks to."""
        return self.token is not None and self.signing_secret is not None


class EmailSettings(_Group):
    """Mail per remediation stage. No smtp_host: email is off."""

    smtp_host: str | None = Field(None, description="SMTP server; none: no email.")
    smtp_port: int = Field(587, ge=1, le=65535, description="SMTP server port.")
    security: Literal["none", "starttls", "tls"] = Field(
        "starttls",
        description="none: plain SMTP; starttls: upgrade the connection (port 587); "
        "tls: TLS from the first byte (port 465).",
    )
    username: str | None = Field(None, description="SMTP AUTH user; none: no AUTH.")
    password: SecretStr | None = Field(None, description="SMTP AUTH password.")
    password_file: Path | None = Field(
        None, description="File holding the SMTP password (a mounted Secret)."
    )
    sender: str = Field("remediator@localhost", description="From address of every mail.")
    recipients: tuple[str, ...] = Field(
        (), description="Recipients when no route matches; none: no mail for that remediation."
    )
    recipients_by_service: dict[str, tuple[str, ...]] = Field(
        {}, description="Recipients per service; a service listed here beats its severity."
    )
    recipients_by_severity: dict[str, tuple[str, ...]] = Field(
        {}, description="Recipients per alert severity (lower case), used before recipients."
    )

    @model_validator(mode="before")
    @classmethod
    def _password_file(cls, data: Any) -> Any:
        if (
            isinstance(data, dict)
            and _is_path(data.get("password_file"))
            and not data.get("password")
        ):
            data = {**data, "password": _read_secret(Path(data["password_file"]), "password")}
        return data

    @property
    def enabled(self) -> bool:
        return self.smtp_host is not None


class ApprovalSettings(_Group):
    """Plans waiting for approval (docs/operations.md, "Approvals")."""

    default_response_seconds: float = Field(
        3600.0,
        gt=0,
        description="Response time of a rule requiring approval without approval_timeout; "
        "past it the request is escalated.",
    )
    expiry_factor: float = Field(
        4.0,
        ge=1.0,
        description="A waiting plan ends expired this many response times after it was "
        "requested, and never runs afterwards.",
    )
    emergency_approver_roles: CommaList = Field(
        ("tech-lead",),
        min_length=1,
        description="An emergency request (emergency: true) needs one approver holding one "
        "of these approver roles, and owes a review afterwards.",
    )
    escalation_channel: str | None = Field(
        None,
        description="Slack channel (id) for escalation notices; default: the remediation's "
        "own channel.",
    )
    check_interval_seconds: float = Field(
        15.0, gt=0, description="How often waiting plans are checked for escalation and expiry."
    )
    time_scale: float = Field(
        1.0,
        gt=0,
        description="Testing only: every response time and expiry is multiplied by this "
        "(e.g. 0.001 turns 15 minutes into under a second); never set in production.",
    )

    def config(self) -> ApprovalConfig:
        return ApprovalConfig(
            default_response_time=timedelta(seconds=self.default_response_seconds),
            expiry_factor=self.expiry_factor,
            emergency_roles=self.emergency_approver_roles,
            time_scale=self.time_scale,
        )


class DatabaseSettings(_Group):
    """Services' own databases: backups before migration steps (docs/database.md)."""

    backup_root: Path = Field(
        Path("/var/lib/remediator/backups"),
        description="Where backups (pg_dump) go, in a directory per service, for services "
        "whose catalog database block sets no backup_dir; `remediator db backups` and "
        "`db restore` read them there. Mount a volume: backups hold the data.",
    )


class RetentionSettings(_Group):
    """What remediator keeps to undo its own work, pruned by the daemon."""

    interval_seconds: float = Field(
        3600.0, gt=0, description="How often the daemon prunes backups and config snapshots."
    )
    backups_keep: int = Field(
        5, ge=1, description="Database backups kept per service whatever their age (newest)."
    )
    backups_keep_days: float = Field(
        14.0, ge=0, description="Database backups younger than this are kept whatever their count."
    )
    config_snapshots_keep: int = Field(
        10,
        ge=2,
        description="Revisions per Deployment whose ConfigMap snapshots are kept whatever "
        "their age (newest; at least 2: the live one and the one a restore goes back to).",
    )
    config_snapshots_keep_days: float = Field(
        30.0,
        ge=0,
        description="ConfigMap snapshots younger than this are kept whatever their count.",
    )

    def backup_policy(self) -> RetentionPolicy:
        return RetentionPolicy(keep_newest=self.backups_keep, keep_days=self.backups_keep_days)

    def snapshot_policy(self) -> RetentionPolicy:
        return RetentionPolicy(
            keep_newest=self.config_snapshots_keep, keep_days=self.config_snapshots_keep_days
        )


class PrometheusSettings(_Group):
    """The Prometheus verification asks (read-only)."""

    url: str | None = Field(
        None,
        description="Prometheus to ask whether a remediation's triggering condition has "
        "cleared (read-only instant queries); unset: that check is recorded skipped.",
    )
    timeout_seconds: float = Field(10.0, gt=0, description="One query to Prometheus.")
    poll_seconds: float = Field(
        15.0, gt=0, description="Between queries while waiting for a condition to clear."
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value


class ShutdownSettings(_Group):
    """Draining on SIGTERM (docs/operations.md, "Shutdown")."""

    # Kubernetes' default grace period is 30 s and includes the preStop sleep (5 s in
    # the chart): 20 s leaves a margin before SIGKILL.
    timeout_seconds: float = Field(
        20.0,
        gt=0,
        description="On SIGTERM, the whole drain (Kafka commit, running plans' current step, "
        "in-flight requests, outbox flush, closing) finishes within this.",
    )


class LogSettings(_Group):
    """Log lines on stderr."""

    format: Literal["text", "json"] = Field(
        "text", description="text for people, json (one object a line) for log collectors."
    )
    level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Least severe level written."
    )


class Settings(BaseSettings):
    """Everything the daemon reads at start-up."""

    model_config = SettingsConfigDict(
        env_prefix="REMEDIATOR_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    http: HttpSettings = Field(default_factory=HttpSettings)
    journal: JournalSettings = Field(default_factory=JournalSettings)
    signals: SignalSettings = Field(default_factory=SignalSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    kubernetes: KubernetesSettings = Field(default_factory=KubernetesSettings)
    slack: SlackSettings = Field(default_factory=SlackSettings)
    email: EmailSettings = Field(default_factory=EmailSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    shutdown: ShutdownSettings = Field(default_factory=ShutdownSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    approvals: ApprovalSettings = Field(default_factory=ApprovalSettings)
    prometheus: PrometheusSettings = Field(default_factory=PrometheusSettings)
    rules_path: Path = Field(Path("rules"), description="Directory of rule files (flag --rules).")
    dry_run: bool = Field(
        False, description="Decide and record, but change nothing (flag --dry-run)."
    )
    failpoints: str | None = Field(
        None,
        description="Testing only: fault-injection points to arm (see "
        "remediator/domain/failpoints.py); never set in production.",
    )
    webhook_token: SecretStr | None = Field(
        None,
        description="Bearer token of the principal `webhook`, which may only post alerts.",
    )
    webhook_token_file: Path | None = Field(
        None, description="File holding the bearer token (a mounted Secret)."
    )
    webhook_username: str | None = Field(None, description="Basic-auth user for webhook callers.")
    webhook_password: SecretStr | None = Field(
        None, description="Basic-auth password for webhook callers (with webhook_username)."
    )
    webhook_password_file: Path | None = Field(
        None, description="File holding the basic-auth password (a mounted Secret)."
    )

    @model_validator(mode="before")
    @classmethod
    def _read_secret_files(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        problems = []
        for name in ("webhook_token", "webhook_password"):
            path = data.get(f"{name}_file")
            # A path of the wrong type is left to the field's own validation to name.
            if _is_path(path) and not data.get(name):
                try:
                    data = {**data, name: _read_secret(Path(str(path)), name)}
                except ValueError as exc:
                    problems.append(str(exc))
        if problems:
            raise ValueError("\n".join(problems))
        return data

    @field_validator("failpoints")
    @classmethod
    def _valid_failpoints(cls, value: str | None) -> str | None:
        try:
            Failpoints.parse(value)
        except ValueError:
            # Failpoints' own message quotes the item; settings errors never quote values.
            raise ValueError(
                "expected POINT[:KEY][*COUNT],... with POINT one of the points in "
                "remediator/domain/failpoints.py"
            ) from None
        return value

    @property
    def armed_failpoints(self) -> Failpoints:
        return Failpoints.parse(self.failpoints)

    @model_validator(mode="after")
    def _auth_is_consistent(self) -> Settings:
        if (self.webhook_username is None) != (self.webhook_password is None):
            raise ValueError("webhook_username and webhook_password must be set together")
        if self.webhook_token is not None and not self.webhook_token.get_secret_value():
            raise ValueError("webhook_token is empty")
        return self

    @property
    def auth_configured(self) -> bool:
        return (
            self.webhook_token is not None
            or self.webhook_username is not None
            or self.auth.principals_file is not None
        )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _config_file.get()
        if config_file is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)

    def redacted(self) -> dict[str, Any]:
        """A JSON-able view for ``config show`` and start-up logs: secrets masked.

        SecretStr dumps as ``**********``; a password inside a URL (``https://u:pw@host``,
        e.g. a base URL through an authenticating proxy) is masked too.
        """
        shown: dict[str, Any] = _mask_url_passwords(self.model_dump(mode="json"))
        return shown


def _read_secret(path: Path, name: str) -> str:
    # The path is not shown: a secret pasted where its file's path belongs would be.
    try:
        value = path.read_text().strip()
    except UnicodeDecodeError:
        raise ValueError(f"{name}_file: not UTF-8 text") from None
    except (OSError, ValueError) as exc:  # ValueError: e.g. a NUL byte in the path
        reason = exc.strerror if isinstance(exc, OSError) else None
        raise ValueError(f"{name}_file: cannot be read ({reason or type(exc).__name__})") from None
    if not value:
        raise ValueError(f"{name}_file: the file is empty")
    return value


def host_port(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("not HOST:PORT (e.g. 127.0.0.1:9095)")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_settings(
    *, config_file: Path | None = None, overrides: dict[str, Any] | None = None
) -> Settings:
    """Build Settings once; raise ConfigError naming what is wrong and where it came from.

    The error names each field and its problem, never a value: a value may be a secret,
    or a secret put in the wrong place, and this message ends up in the pod log. The
    cause is not chained either (pydantic's error text quotes the input).
    """
    if config_file is not None:
        _check_config_file(config_file)
    origin = f" (config file {config_file}, environment REMEDIATOR_*)" if config_file else ""
    token = _config_file.set(config_file)
    try:
        return Settings(**(overrides or {}))
    except ValidationError as exc:
        problems = describe_errors(exc)
    except SettingsError as exc:  # an environment value that is not valid JSON
        problems = f"  {exc}"
    except (ValueError, yaml.YAMLError) as exc:  # from a settings source; its text unseen
        problems = f"  cannot be read ({type(exc).__name__})"
    finally:
        _config_file.reset(token)
    raise ConfigError(f"invalid settings{origin}:\n{problems}") from None


def _check_config_file(path: Path) -> None:
    """A readable YAML mapping, or ConfigError saying where it is not (never its text)."""
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    try:
        document = yaml.safe_load(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot be read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {path}: not valid YAML ({_yaml_problem(exc)})") from None
    if document is not None and not isinstance(document, dict):
        raise ConfigError(
            f"--config {path}: expected a mapping of settings (e.g. http: {{listen: ...}}), "
            f"got a {type(document).__name__}"
        )


def describe_errors(exc: ValidationError) -> str:
    """One line per problem, ``  http.listen: not HOST:PORT``, without the input."""
    lines = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        where = "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"]
        ).removeprefix(".")
        message = str(error["msg"]).removeprefix("Value error, ")
        # A validator that names several problems puts each on its own line.
        lines += [f"  {where}: {one}" if where else f"  {one}" for one in message.split("\n")]
    return "\n".join(lines)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """Where and what, not the snippet of the file (it may show a secret)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        return f"{where}{exc.problem or exc.context or type(exc).__name__}"
    return type(exc).__name__
