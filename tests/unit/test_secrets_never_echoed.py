"""Secrets never echoed: settings errors, ``config show``, the start-up log, reprs, DSNs.

The secret settings are enumerated from the Settings model (every ``SecretStr`` field and
its ``*_file`` variant), so one added later is covered without touching this file. Each
gets a value built around a unique marker; the marker must never reach stdout or stderr
of ``remediator run`` / ``remediator config show``, whether the value came from the
environment or from the YAML config file, and the error must name the field instead.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import types
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import orjson
import pytest
import yaml
from pydantic import BaseModel, SecretStr

from remediator.connectors.postgres.dsn import (
    libpq_target,
    password_of,
    redact,
    resolve_dsn,
    scrub,
)
from remediator.domain.errors import ConfigError, RemediatorError
from remediator.settings import Settings, load_settings
from tests.env.base import free_port

REPO = Path(__file__).resolve().parents[2]
# Every marker starts with this: a partial echo (a truncated repr) is caught too.
PREFIX = "Qx7Zk"


def marker(path: tuple[str, ...]) -> str:
    return f"{PREFIX}-{'-'.join(path)}-9c1e"


# -- enumerating the secret settings from the model -----------------------------------
def _types_in(annotation: Any) -> Iterator[Any]:
    yield annotation
    if get_origin(annotation) in (Union, types.UnionType) or get_args(annotation):
        for arg in get_args(annotation):
            yield from _types_in(arg)


def leaf_fields(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths: list[tuple[str, ...]] = []
    for name, info in model.model_fields.items():
        groups = [t for t in _types_in(info.annotation) if isinstance(t, type)]
        nested = [t for t in groups if issubclass(t, BaseModel)]
        if nested:
            paths += leaf_fields(nested[0], (*prefix, name))
        else:
            paths.append((*prefix, name))
    return paths


def field_type(path: tuple[str, ...]) -> Any:
    model: Any = Settings
    for name in path[:-1]:
        model = model.model_fields[name].annotation
    return model.model_fields[path[-1]].annotation


SECRET_PATHS = [p for p in leaf_fields(Settings) if SecretStr in set(_types_in(field_type(p)))]
FILE_PATHS = [
    (*p[:-1], f"{p[-1]}_file")
    for p in SECRET_PATHS
    if (*p[:-1], f"{p[-1]}_file") in set(leaf_fields(Settings))
]


def dotted(path: tuple[str, ...]) -> str:
    return ".".join(path)


def test_every_secret_setting_is_enumerated() -> None:
    assert {dotted(p) for p in SECRET_PATHS} >= {
        "webhook_token", "webhook_password", "kafka.sasl_password", "slack.token",
        "email.password",
    }  # fmt: skip
    assert {dotted(p) for p in FILE_PATHS} >= {
        "webhook_token_file", "webhook_password_file", "slack.token_file", "email.password_file",
    }  # fmt: skip


# -- settings as the environment or a YAML file ------------------------------------------
def nested(flat: dict[tuple[str, ...], Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, value in flat.items():
        node = out
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = value
    return out


def as_env(settings: dict[str, Any]) -> dict[str, str]:
    """REMEDIATOR_GROUP__NAME=value; a group holding a list or mapping goes as JSON whole
    (the only way the environment carries a value of the wrong type)."""
    env: dict[str, str] = {}
    for name, value in settings.items():
        key = f"REMEDIATOR_{name.upper()}"
        if isinstance(value, dict) and any(isinstance(v, dict | list) for v in value.values()):
            env[key] = orjson.dumps(value).decode()
        elif isinstance(value, dict):
            env.update({f"{key}__{k.upper()}": _scalar(v) for k, v in value.items()})
        else:
            env[key] = _scalar(value)
    return env


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return orjson.dumps(value).decode() if isinstance(value, list | dict) else str(value)


def clean_env(workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMEDIATOR_")}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    env["KUBECONFIG"] = str(workdir / "no-kubeconfig")
    env["PYTHONPATH"] = str(REPO)
    return env


def remediator_args(command: str, workdir: Path, port: int | None = None) -> list[str]:
    """Flags beat settings: ``--listen``/``--journal`` only where settings must not decide."""
    if command != "run":
        return command.split()
    args = ["run", "--rules", str(REPO / "rules")]
    if port is not None:
        args += ["--listen", f"127.0.0.1:{port}", "--journal", f"sqlite:///{workdir / 'j.db'}"]
    return args


def with_settings(
    settings: dict[str, Any], *, source: str, workdir: Path, env: dict[str, str], args: list[str]
) -> None:
    """Put ``settings`` into the environment or a YAML file given with --config."""
    if source == "env":
        env.update(as_env(settings))
    else:
        config = workdir / "config.yaml"
        config.write_text(yaml.safe_dump(settings))
        args += ["--config", str(config)]


def invoke(
    command: str, settings: dict[str, Any], *, source: str, workdir: Path
) -> subprocess.CompletedProcess[str]:
    env = clean_env(workdir)
    args = remediator_args(command, workdir)
    with_settings(settings, source=source, workdir=workdir, env=env, args=args)
    return subprocess.run(
        [sys.executable, "-m", "remediator", *args],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def secret_values() -> dict[tuple[str, ...], str]:
    values = {path: marker(path) for path in SECRET_PATHS}
    # The journal URL's scheme is checked: its marker goes where a password goes.
    journal = ("journal", "url")
    values[journal] = f"postgresql://app:{marker(journal)}@127.0.0.1:1/x"
    return values


def wrong_types(tmp: Path) -> tuple[dict[str, Any], list[str]]:
    flat: dict[tuple[str, ...], Any] = {p: [marker(p)] for p in SECRET_PATHS}
    flat |= {p: {"path": marker(p)} for p in FILE_PATHS}
    named = [f"{dotted(p)}: Input should be a valid string" for p in SECRET_PATHS]
    return nested(flat), named + [dotted(p) for p in FILE_PATHS]


def group_rules(tmp: Path) -> tuple[dict[str, Any], list[str]]:
    """Each group's own check fails with its secret set (pydantic quoted the whole group),
    and non-secret fields hold a secret pasted in the wrong place."""
    flat: dict[tuple[str, ...], Any] = dict(secret_values())
    del flat[("webhook_password",)]  # the root check runs only once the groups pass
    flat |= {
        ("kafka", "security_protocol"): "SASL_SSL",
        ("email", "smtp_port"): 0,
        ("journal", "url"): f"mysql://app:{marker(('dsn',))}@db/shop",
        ("http", "listen"): marker(("http", "listen")),
        ("kubernetes", "lock_retry_base_seconds"): marker(("lock",)),
    }
    return nested(flat), [
        "slack: default_channel is required when a token is set",
        "kafka: a SASL_* security_protocol needs",
        "email.smtp_port:",
        "journal.url: journal URL must start with sqlite:///",
        "http.listen: not HOST:PORT",
        "kubernetes.lock_retry_base_seconds:",
    ]


def root_rules(tmp: Path) -> tuple[dict[str, Any], list[str]]:
    """The top-level check fails: pydantic quoted every setting, secrets included."""
    flat: dict[tuple[str, ...], Any] = dict(secret_values())
    flat |= {
        ("slack", "default_channel"): "C0123",
        ("kafka", "security_protocol"): "SASL_SSL",
        ("kafka", "sasl_mechanism"): "PLAIN",
        ("kafka", "sasl_username"): "svc",
        ("kafka", "bootstrap_servers"): "127.0.0.1:1",
    }
    return nested(flat), ["webhook_username and webhook_password must be set together"]


def missing_files(tmp: Path) -> tuple[dict[str, Any], list[str]]:
    """A secret pasted where its file's path belongs: the path is not shown."""
    flat = {p: f"/nonexistent/{marker(p)}" for p in FILE_PATHS if len(p) == 1}
    return nested(flat), [f"{dotted(p)}: cannot be read" for p in flat]


def missing_group_files(tmp: Path) -> tuple[dict[str, Any], list[str]]:
    flat = {p: f"/nonexistent/{marker(p)}" for p in FILE_PATHS if len(p) > 1}
    return nested(flat), [f"{p[0]}: {p[-1]}: cannot be read" for p in flat]


def files_read_then_refused(tmp: Path) -> tuple[dict[str, Any], list[str]]:
    """Secrets read from their files, then a check fails on the group holding them."""
    flat: dict[tuple[str, ...], Any] = {}
    for path in FILE_PATHS:
        secret_file = tmp / f"{dotted(path)}.secret"
        secret_file.write_text(marker(path) + "\n")
        flat[path] = str(secret_file)
    flat[("kafka", "security_protocol")] = "SASL_SSL"
    return nested(flat), ["slack: default_channel is required when a token is set"]


SCENARIOS = {
    "wrong-types": wrong_types,
    "group-checks": group_rules,
    "root-check": root_rules,
    "missing-files": missing_files,
    "missing-group-files": missing_group_files,
    "files-read-then-refused": files_read_then_refused,
}


def assert_no_marker(result: subprocess.CompletedProcess[str]) -> None:
    output = result.stdout + result.stderr
    assert PREFIX not in output, output


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("source", ["env", "yaml"])
@pytest.mark.parametrize("command", ["run", "config show"])
def test_invalid_settings_name_the_field_never_the_value(
    tmp_path: Path, scenario: str, source: str, command: str
) -> None:
    settings, named = SCENARIOS[scenario](tmp_path)
    if source == "env" and scenario == "wrong-types":
        # The environment can only carry a group as JSON: top-level values stay strings
        # (valid ones), so only the groups' fields are wrong.
        named = [n for n in named if "." in n.split(":")[0]]
    result = invoke(command, settings, source=source, workdir=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert_no_marker(result)
    assert "remediator: configuration error: invalid settings" in result.stderr
    for fragment in named:
        assert fragment in result.stderr, (fragment, result.stderr)
    assert "Traceback" not in result.stderr


def valid_secrets(tmp: Path) -> dict[str, Any]:
    flat: dict[tuple[str, ...], Any] = dict(secret_values())
    flat |= {
        ("webhook_username",): "alertmanager",
        ("slack", "default_channel"): "C0123",
        ("slack", "base_url"): "http://127.0.0.1:1/api/",
        ("kafka", "security_protocol"): "SASL_PLAINTEXT",
        ("kafka", "sasl_mechanism"): "PLAIN",
        ("kafka", "sasl_username"): "svc",
        ("kafka", "bootstrap_servers"): "127.0.0.1:1",
        ("email", "smtp_host"): "127.0.0.1",
        ("email", "smtp_port"): 1,
        ("email", "username"): "mailer",
        ("log", "level"): "debug",  # every line any library writes, too
    }
    return nested(flat)


@pytest.mark.parametrize("source", ["env", "yaml"])
def test_config_show_masks_every_secret(tmp_path: Path, source: str) -> None:
    result = invoke("config show", valid_secrets(tmp_path), source=source, workdir=tmp_path)
    assert result.returncode == 0, result.stderr
    assert_no_marker(result)
    shown = orjson.loads(result.stdout)
    for path in SECRET_PATHS:
        node = shown
        for name in path:
            node = node[name]
        assert node == "**********", path


@pytest.mark.parametrize("source", ["env", "yaml"])
def test_the_running_daemon_logs_no_secret(tmp_path: Path, source: str) -> None:
    """Start-up, a request, and shutdown at debug level: no secret in the log."""
    env = clean_env(tmp_path)
    port = free_port()
    args = remediator_args("run", tmp_path, port)
    with_settings(valid_secrets(tmp_path), source=source, workdir=tmp_path, env=env, args=args)
    log_path = tmp_path / "daemon.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "remediator", *args],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        wait_ready(proc, port, log_path)
        # A refused request (wrong token) and one authenticated by the real token (as the
        # ingest-only webhook principal: 403 on a read route, not 401).
        assert http_status(port, "/api/v1/circuit", token="wrong") == 401
        assert http_status(port, "/api/v1/circuit", token=marker(("webhook_token",))) == 403
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    output = log_path.read_text(errors="replace")
    assert code == 0, output[-3000:]
    assert "remediator listening on" in output
    assert PREFIX not in output, [line for line in output.splitlines() if PREFIX in line]


def wait_ready(proc: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited {proc.returncode}:\n{log_path.read_text()}")
        with contextlib.suppress(OSError):
            if http_status(port, "/readyz") == 200:
                return
        time.sleep(0.1)
    raise AssertionError(f"daemon not ready within 30s:\n{log_path.read_text()}")


def http_status(port: int, path: str, *, token: str | None = None) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return err.code


# -- every field, in process: no settings error quotes a value ------------------------------
ALL_FIELDS = leaf_fields(Settings)


@pytest.fixture
def no_remediator_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("REMEDIATOR_"):
            monkeypatch.delenv(name)


@pytest.mark.usefixtures("no_remediator_env")
@pytest.mark.parametrize("path", ALL_FIELDS, ids=dotted)
def test_no_setting_is_quoted_in_its_error(
    path: tuple[str, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any value may be a secret put in the wrong place: an invalid one is never quoted."""
    value = marker(path)
    refused = 0
    for candidate in ({"k": value}, [value], value, f"/nonexistent/{value}"):
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump(nested({path: candidate})))
        error = settings_error(config_file=config)
        if error is None:
            continue
        refused += 1
        assert PREFIX not in str(error), str(error)
        assert path[-1] in str(error), str(error)  # names the field
        assert error.__cause__ is None and error.__suppress_context__  # nothing quoted below
    assert refused, f"{dotted(path)}: no candidate value was refused; add one"
    # Through the environment too (a string, so only typed fields refuse it).
    monkeypatch.setenv(f"REMEDIATOR_{'__'.join(path).upper()}", value)
    error = settings_error()
    if error is not None:
        assert PREFIX not in str(error), str(error)
        assert path[0] in str(error), str(error)


def settings_error(config_file: Path | None = None) -> ConfigError | None:
    try:
        load_settings(config_file=config_file)
    except ConfigError as exc:
        return exc
    return None


# -- reprs of settings and of connectors holding secrets -----------------------------------
def test_reprs_of_settings_and_connectors_hold_no_secret(
    tmp_path: Path, no_remediator_env: None
) -> None:
    from remediator.connectors.email import EmailNotifier
    from remediator.connectors.helm import Helm
    from remediator.connectors.kafka import KafkaPublisher
    from remediator.connectors.slack import SlackNotifier
    from remediator.ingress.auth import Authenticator, WebhookCredential
    from remediator.ingress.kafka import KafkaDeadLetters
    from remediator.journal import journal_from_url

    settings = load_settings(overrides=valid_secrets(tmp_path))
    dsn = SecretStr(f"postgresql://app:{marker(('dsn',))}@db:5432/shop")
    objects: list[object] = [
        settings,
        settings.redacted(),
        *(getattr(settings, group) for group in ("kafka", "slack", "email")),
        SlackNotifier(token=marker(("slack", "token")), base_url="http://127.0.0.1:1/api/"),
        EmailNotifier(
            host="127.0.0.1",
            port=1,
            sender="r@example.com",
            security="none",
            username="u",
            password=SecretStr(marker(("email", "password"))),
        ),
        KafkaPublisher(settings=settings.kafka),
        KafkaDeadLetters(settings=settings.kafka),
        Helm(binary=Path("helm"), kubeconfig=None, env={"HELM_X": marker(("helm",))}),
        webhook := WebhookCredential(
            bearer_token=marker(("webhook_token",)),
            basic_user="u",
            basic_password=marker(("webhook_password",)),
        ),
        Authenticator(webhook=webhook),
        dsn,
        libpq_target(dsn),
        journal_from_url(dsn),  # the PostgreSQL journal, unopened
        journal_from_url(settings.journal.url),
    ]
    for obj in objects:
        assert PREFIX not in repr(obj), repr(obj)
        assert PREFIX not in str(obj), str(obj)


# -- DSNs: connector errors never carry the password -----------------------------------------
SECRET = marker(("dsn",))


@pytest.mark.parametrize(
    "dsn",
    [
        f"mysql://app:{SECRET}@db/shop",  # the wrong scheme
        f"postgresql://app:{SECRET}@[broken/shop",  # does not parse
        SECRET,  # the password pasted where the DSN belongs
        f"host=db password={SECRET}",  # key=value form
    ],
)
async def test_a_dsn_that_cannot_be_used_is_refused_without_its_password(
    dsn: str, tmp_path: Path
) -> None:
    with pytest.raises(RemediatorError) as caught:
        await resolve_dsn(env="APP_DSN", environ={"APP_DSN": dsn})
    assert SECRET not in str(caught.value)
    assert "APP_DSN" in str(caught.value)
    with pytest.raises(RemediatorError) as caught:
        libpq_target(SecretStr(dsn))
    assert SECRET not in str(caught.value)
    assert SECRET not in redact(dsn)
    assert SECRET not in scrub(f"tool said: {dsn}", dsn)


def test_the_password_of_an_unparseable_dsn_is_still_found_to_scrub() -> None:
    dsn = f"postgresql://app:{SECRET}@[broken/shop"
    assert password_of(dsn) == SECRET
    assert SECRET not in scrub(f"could not connect with {dsn}", dsn)


# -- child processes: an allow-listed environment --------------------------------------------
def test_child_env_inherits_only_the_allow_list() -> None:
    from remediator.connectors.childenv import child_env

    parent = {
        "PATH": "/bin", "HOME": "/home/r", "LANG": "C.UTF-8", "LC_ALL": "C", "TZ": "UTC",
        "TMPDIR": "/tmp", "REMEDIATOR_WEBHOOK_TOKEN": PREFIX, "SLACK_TOKEN": PREFIX,
        "HELM_CACHE_HOME": "/cache", "REMEDIATOR_HELM_X": PREFIX, "PGPASSWORD": PREFIX,
    }  # fmt: skip
    assert child_env(parent=parent) == {
        "PATH": "/bin", "HOME": "/home/r", "LANG": "C.UTF-8", "LC_ALL": "C", "TZ": "UTC",
        "TMPDIR": "/tmp",
    }  # fmt: skip
    # What a connector names is passed, but never a REMEDIATOR_* variable ...
    env = child_env(
        parent=parent,
        passed={"REMEDIATOR_WEBHOOK_TOKEN"},
        passed_prefixes=("HELM_", "REMEDIATOR_"),
    )
    assert env["HELM_CACHE_HOME"] == "/cache"
    assert PREFIX not in repr(env)
    # ... while values set for the call are the caller's own and win.
    env = child_env({"PGPASSWORD": "for-this-call", "PATH": "/opt/bin"}, parent=parent)
    assert (env["PGPASSWORD"], env["PATH"]) == ("for-this-call", "/opt/bin")


async def test_run_tool_children_never_see_the_daemons_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from remediator.connectors.postgres.tools import run_tool

    monkeypatch.setenv("REMEDIATOR_WEBHOOK_TOKEN", PREFIX + "-token")
    monkeypatch.setenv("SMTP_PASSWORD", PREFIX + "-smtp")
    result = await run_tool(
        ["/usr/bin/env"], env={"PGPASSWORD": "pw"}, what="env", secret="pw", timeout_s=30
    )
    seen = dict(line.partition("=")[::2] for line in result.stdout.splitlines())
    assert PREFIX not in result.stdout
    assert seen["PATH"] == os.environ["PATH"]
    assert seen["PGPASSWORD"] == "***"  # set for the call; scrubbed from what is kept
