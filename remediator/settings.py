"""Settings: built once at the entry point, then passed down.

Precedence, highest first: command-line flags, environment (``REMEDIATOR_`` prefix,
``__`` between nested names), the YAML file given with ``--config``, defaults.
"""

from __future__ import annotations

import ipaddress
import socket
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from remediator.domain.errors import ConfigError
from remediator.domain.signals import DEFAULT_NAMESPACE_LABELS, DEFAULT_SERVICE_LABELS

DEFAULT_LISTEN = "127.0.0.1:9095"
DEFAULT_JOURNAL = "sqlite:///var/remediator.db"
MIB = 1024 * 1024

_config_file: ContextVar[Path | None] = ContextVar("remediator_config_file", default=None)


class _Group(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class HttpSettings(_Group):
    listen: str = Field(DEFAULT_LISTEN, description="HOST:PORT the HTTP server binds.")
    # Alertmanager never retries a 4xx, so a 413 on an alert storm loses alerts:
    # the limit sits far above aiohttp's 1 MiB default.
    body_limit_bytes: int = Field(16 * MIB, gt=0, description="Largest request body accepted.")
    drain_timeout_seconds: float = Field(
        10.0, gt=0, description="On SIGTERM, how long in-flight requests may take to finish."
    )
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

    @field_validator("listen")
    @classmethod
    def _valid_listen(cls, value: str) -> str:
        host_port(value)
        return value

    @property
    def host(self) -> str:
        return host_port(self.listen)[0]

    @property
    def port(self) -> int:
        return host_port(self.listen)[1]


class JournalSettings(_Group):
    url: str = Field(
        DEFAULT_JOURNAL,
        description="sqlite:///relative/path, sqlite:////absolute/path (PostgreSQL comes later).",
    )
    # Alertmanager resends for as long as an alert fires; keys must outlive a day of resends.
    retention_hours: float = Field(
        24.0 * 7, ge=24.0, description="How long signals and their idempotency keys are kept."
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

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if not value.startswith("sqlite:///"):
            raise ValueError(
                "journal URL must start with sqlite:/// (e.g. sqlite:///var/remediator.db)"
            )
        return value

    @property
    def sqlite_path(self) -> Path:
        return Path(self.url.removeprefix("sqlite:///"))


class SignalSettings(_Group):
    service_labels: tuple[str, ...] = Field(
        DEFAULT_SERVICE_LABELS, min_length=1, description="Labels naming the service, in order."
    )
    namespace_labels: tuple[str, ...] = Field(
        DEFAULT_NAMESPACE_LABELS, min_length=1, description="Labels naming the namespace."
    )


def _comma_list(value: Any) -> Any:
    """Accept "a:9092,b:9092" (flags, env) as well as a YAML/JSON list."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


CommaList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_comma_list)]


class KafkaSettings(_Group):
    """Deploy events in, outcome events out. Empty bootstrap_servers: webhook-only."""

    bootstrap_servers: CommaList = Field((), description="HOST:PORT[,HOST:PORT...]")
    deploy_topics: CommaList = Field(("deployments",), description="Topics of deploy events.")
    outcome_topic: str = Field("remediator.outcomes", description="Topic for outcome events.")
    group_id: str = Field("remediator", description="Consumer group of every replica.")
    client_id: str = "remediator"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    max_delivery_attempts: int = Field(
        5, ge=1, description="Failures of one message before it goes to <topic><dlq_suffix>."
    )
    dlq_suffix: str = Field(".dlq", min_length=1)

    @property
    def enabled(self) -> bool:
        return bool(self.bootstrap_servers)

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL_") and (
            self.sasl_mechanism is None or self.sasl_username is None or self.sasl_password is None
        ):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs sasl_mechanism, "
                "sasl_username and sasl_password"
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
    rollout_timeout_seconds: float = Field(300.0, gt=0, description="Wait for a rollout.")
    health_timeout_seconds: float = Field(10.0, gt=0, description="One health-URL check.")
    max_concurrent_plans: int = Field(4, ge=1, description="Plans run at once (all services).")
    drain_timeout_seconds: float = Field(
        60.0, gt=0, description="On SIGTERM, how long running plans may take to end their step."
    )
    helm_binary: str = Field("helm", description="helm executable for helm rollbacks.")


class SlackSettings(_Group):
    """One message per remediation, updated in place. No token: Slack is off."""

    token: SecretStr | None = Field(None, description="Bot token (xoxb-...).")
    token_file: Path | None = Field(None, description="File holding the token.")
    base_url: str = Field("https://slack.com/api/", description="Web API base URL.")
    default_channel: str | None = Field(None, description="Channel id used when no route matches.")
    channels_by_service: dict[str, str] = {}
    channels_by_severity: dict[str, str] = {}

    @model_validator(mode="before")
    @classmethod
    def _token_file(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("token_file") and not data.get("token"):
            data = {**data, "token": _read_secret(Path(data["token_file"]), "slack.token")}
        return data

    @model_validator(mode="after")
    def _channel_when_on(self) -> SlackSettings:
        if self.token is not None and self.default_channel is None:
            raise ValueError("slack.default_channel is required when a Slack token is set")
        return self

    @property
    def enabled(self) -> bool:
        return self.token is not None


class EmailSettings(_Group):
    """Mail per remediation stage. No smtp_host: email is off."""

    smtp_host: str | None = None
    smtp_port: int = Field(587, ge=1, le=65535)
    security: Literal["none", "starttls", "tls"] = "starttls"
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    sender: str = "remediator@localhost"
    recipients: tuple[str, ...] = ()
    recipients_by_service: dict[str, tuple[str, ...]] = {}
    recipients_by_severity: dict[str, tuple[str, ...]] = {}

    @model_validator(mode="before")
    @classmethod
    def _password_file(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("password_file") and not data.get("password"):
            data = {**data, "password": _read_secret(Path(data["password_file"]), "email.password")}
        return data

    @property
    def enabled(self) -> bool:
        return self.smtp_host is not None


class DatabaseSettings(_Group):
    backup_root: Path = Field(
        Path("/var/lib/remediator/backups"),
        description="Where pg_dump backups go for services without database.backup_dir "
        "(a volume: backups hold the data).",
    )


class LogSettings(_Group):
    format: Literal["text", "json"] = "text"
    level: Literal["debug", "info", "warning", "error"] = "info"


class Settings(BaseSettings):
    """Everything the daemon reads at start-up."""

    model_config = SettingsConfigDict(
        env_prefix="REMEDIATOR_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    http: HttpSettings = HttpSettings()
    journal: JournalSettings = JournalSettings()
    signals: SignalSettings = SignalSettings()
    kafka: KafkaSettings = KafkaSettings()
    kubernetes: KubernetesSettings = KubernetesSettings()
    slack: SlackSettings = SlackSettings()
    email: EmailSettings = EmailSettings()
    log: LogSettings = LogSettings()
    database: DatabaseSettings = DatabaseSettings()
    rules_path: Path = Field(Path("rules"), description="Directory of rule files.")
    dry_run: bool = Field(False, description="Decide and record, but change nothing.")
    webhook_token: SecretStr | None = Field(None, description="Bearer token webhook callers send.")
    webhook_token_file: Path | None = Field(
        None, description="File holding the bearer token (a mounted Secret)."
    )
    webhook_username: str | None = Field(None, description="Basic-auth user for webhook callers.")
    webhook_password: SecretStr | None = None
    webhook_password_file: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _read_secret_files(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for name in ("webhook_token", "webhook_password"):
            path = data.get(f"{name}_file")
            if path and not data.get(name):
                data = {**data, name: _read_secret(Path(path), name)}
        return data

    @model_validator(mode="after")
    def _auth_is_consistent(self) -> Settings:
        if (self.webhook_username is None) != (self.webhook_password is None):
            raise ValueError("webhook_username and webhook_password must be set together")
        if self.webhook_token is not None and not self.webhook_token.get_secret_value():
            raise ValueError("webhook_token is empty")
        return self

    @property
    def auth_configured(self) -> bool:
        return self.webhook_token is not None or self.webhook_username is not None

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
        """A JSON-able view for ``config show`` and start-up logs: secrets masked."""
        return self.model_dump(mode="json")  # SecretStr dumps as '**********'


def _read_secret(path: Path, name: str) -> str:
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise ValueError(f"{name}_file {path}: {exc.strerror}") from exc
    if not value:
        raise ValueError(f"{name}_file {path} is empty")
    return value


def host_port(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen address {listen!r} is not HOST:PORT")
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
    """Build Settings once; raise ConfigError naming what is wrong and where it came from."""
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"--config {config_file}: no such file")
    token = _config_file.set(config_file)
    try:
        return Settings(**(overrides or {}))
    except ValueError as exc:  # pydantic.ValidationError is a ValueError
        origin = f" (config file {config_file})" if config_file else ""
        raise ConfigError(f"invalid settings{origin}:\n{exc}") from exc
    finally:
        _config_file.reset(token)
