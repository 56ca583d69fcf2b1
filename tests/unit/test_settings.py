from __future__ import annotations

from pathlib import Path

import pytest

from remediator.domain.errors import ConfigError
from remediator.runtime import check_bind_is_safe
from remediator.settings import load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("REMEDIATOR_"):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    s = load_settings()
    assert s.http.listen == "127.0.0.1:9095"
    assert s.journal.url.get_secret_value() == "sqlite:///var/remediator.db"
    assert s.rules_path == Path("rules")
    assert s.http.body_limit_bytes == 16 * 1024 * 1024
    assert not s.auth_configured


def test_precedence_flags_over_env_over_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "http:\n  listen: 10.0.0.1:1\n  body_limit_bytes: 1000\njournal:\n  url: sqlite:///file.db\n"
        "log:\n  format: json\n"
    )
    monkeypatch.setenv("REMEDIATOR_HTTP__BODY_LIMIT_BYTES", "2000")
    monkeypatch.setenv("REMEDIATOR_JOURNAL__URL", "sqlite:///env.db")
    s = load_settings(config_file=config, overrides={"journal": {"url": "sqlite:///flag.db"}})
    assert s.journal.url.get_secret_value() == "sqlite:///flag.db"  # flag beats env
    assert s.http.body_limit_bytes == 2000  # env beats file
    assert s.http.listen == "10.0.0.1:1"  # file beats default
    assert s.log.format == "json"


def test_token_from_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMEDIATOR_WEBHOOK_TOKEN", "from-env")
    assert load_settings().webhook_token.get_secret_value() == "from-env"  # type: ignore[union-attr]
    monkeypatch.delenv("REMEDIATOR_WEBHOOK_TOKEN")
    secret = tmp_path / "token"
    secret.write_text("from-file\n")
    monkeypatch.setenv("REMEDIATOR_WEBHOOK_TOKEN_FILE", str(secret))
    assert load_settings().webhook_token.get_secret_value() == "from-file"  # type: ignore[union-attr]


def test_secrets_are_redacted() -> None:
    s = load_settings(
        overrides={"webhook_token": "tok", "webhook_username": "u", "webhook_password": "pw"}
    )
    shown = repr(s.redacted()) + repr(s) + str(s)
    assert "tok" not in shown.replace("token", "") and "pw" not in shown
    assert s.redacted()["webhook_token"] == "**********"


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"http": {"listen": "nope"}}, "listen"),
        ({"journal": {"url": "mysql://x"}}, "sqlite:///"),
        ({"journal": {"retention_hours": 1}}, "retention_hours"),
        ({"webhook_username": "u"}, "together"),
        ({"http": {"bogus": 1}}, "bogus"),
    ],
)
def test_invalid_settings_name_the_field(overrides: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load_settings(overrides=overrides)


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml"):
        load_settings(config_file=tmp_path / "nope.yaml")


def test_missing_token_file_names_the_setting_not_the_path(tmp_path: Path) -> None:
    # The path is not shown: a token pasted into *_file by mistake would be.
    with pytest.raises(ConfigError, match="webhook_token_file: cannot be read") as caught:
        load_settings(overrides={"webhook_token_file": str(tmp_path / "missing-token")})
    assert "missing-token" not in str(caught.value)


def test_non_loopback_without_credentials_is_refused() -> None:
    with pytest.raises(ConfigError, match="insecure-no-auth"):
        check_bind_is_safe(load_settings(overrides={"http": {"listen": "0.0.0.0:9095"}}))
    check_bind_is_safe(
        load_settings(overrides={"http": {"listen": "0.0.0.0:9095", "insecure_no_auth": True}})
    )
    check_bind_is_safe(
        load_settings(overrides={"http": {"listen": "0.0.0.0:9095"}, "webhook_token": "t"})
    )
    check_bind_is_safe(load_settings(overrides={"http": {"listen": "[::1]:9095"}}))


def test_limits_have_sane_defaults_and_reach_the_intake(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from remediator.domain.limits import InputLimits

    assert load_settings().limits.input_limits() == InputLimits()
    assert InputLimits().label_value_bytes == 4096
    assert InputLimits().alerts_per_request == 5000
    config = tmp_path / "c.yaml"
    config.write_text("limits:\n  label_value_bytes: 100\n  alerts_per_request: 7\n")
    monkeypatch.setenv("REMEDIATOR_LIMITS__EVENT_BYTES", "2048")
    limits = load_settings(config_file=config).limits.input_limits()
    assert (limits.label_value_bytes, limits.alerts_per_request) == (100, 7)
    assert limits.event_bytes == 2048
    with pytest.raises(ConfigError, match=r"limits\.name_bytes: Input should be greater than"):
        load_settings(overrides={"limits": {"name_bytes": 0}})


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (
            'slack:\n  token: "xoxb-not-closed\n',
            "not valid YAML (line 3, column 1: found unexpected",
        ),
        ("- a\n- xoxb-in-a-list\n", "expected a mapping of settings"),
        ("webhook_token: !!python/name:os.system xoxb\n", "not valid YAML"),
    ],
)
def test_a_broken_config_file_is_named_without_its_text(
    tmp_path: Path, text: str, fragment: str
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(config_file=config)
    assert fragment in str(caught.value)
    assert str(config) in str(caught.value)
    assert "xoxb" not in str(caught.value)


def test_an_environment_group_that_is_not_json_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMEDIATOR_SLACK", '{"token": "xoxb-unterminated')
    with pytest.raises(ConfigError, match='field "slack"') as caught:
        load_settings()
    assert "xoxb" not in str(caught.value)


def test_every_problem_is_listed_one_per_line_without_values() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(
            overrides={
                "http": {"listen": "xoxb-1", "body_limit_bytes": "xoxb-2"},
                "kafka": {"deploy_topics": ["ok", 5]},
                "failpoints": "xoxb-3",
            }
        )
    assert str(caught.value).splitlines() == [
        "invalid settings:",
        "  http.listen: not HOST:PORT (e.g. 127.0.0.1:9095)",
        "  http.body_limit_bytes: Input should be a valid integer, unable to parse string as an "
        "integer",
        "  kafka.deploy_topics[1]: Input should be a valid string",
        "  failpoints: expected POINT[:KEY][*COUNT],... with POINT one of the points in "
        "remediator/domain/failpoints.py",
    ]


def test_config_show_masks_a_password_inside_a_url() -> None:
    s = load_settings(
        overrides={
            "slack": {"base_url": "https://bot:hunter2@proxy.example/api/"},
            "http": {"public_url": "https://remediator.example.com"},
        }
    )
    shown = s.redacted()
    assert shown["slack"]["base_url"] == "https://bot:***@proxy.example/api/"
    assert shown["http"]["public_url"] == "https://remediator.example.com"


def test_replica_timings_default_and_are_checked_together() -> None:
    journal = load_settings().journal
    assert (
        journal.heartbeat_seconds,
        journal.claim_stale_seconds,
        journal.recovery_interval_seconds,
    ) == (5.0, 30.0, 10.0)
    tuned = load_settings(overrides={"journal": {"heartbeat_seconds": 2, "claim_stale_seconds": 6}})
    assert (tuned.journal.heartbeat_seconds, tuned.journal.claim_stale_seconds) == (2.0, 6.0)
    # A live instance would look gone between two of its own beats.
    with pytest.raises(ConfigError, match="claim_stale_seconds must be at least 3 x heartbeat"):
        load_settings(overrides={"journal": {"heartbeat_seconds": 20}})
    for name in ("heartbeat_seconds", "claim_stale_seconds", "recovery_interval_seconds"):
        with pytest.raises(ConfigError, match=name):
            load_settings(overrides={"journal": {name: 0}})


def test_retention_defaults_env_and_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = load_settings().retention
    assert (defaults.backups_keep, defaults.backups_keep_days) == (5, 14.0)
    assert (defaults.config_snapshots_keep, defaults.config_snapshots_keep_days) == (10, 30.0)
    assert defaults.interval_seconds == 3600.0
    monkeypatch.setenv("REMEDIATOR_RETENTION__BACKUPS_KEEP", "3")
    policy = load_settings().retention.backup_policy()
    assert (policy.keep_newest, policy.keep_days) == (3, 14.0)
    # The live revision and the one a restore goes back to: fewer would prune one.
    with pytest.raises(ConfigError, match="config_snapshots_keep"):
        load_settings(overrides={"retention": {"config_snapshots_keep": 1}})
    with pytest.raises(ConfigError, match="backups_keep"):
        load_settings(overrides={"retention": {"backups_keep": 0}})
