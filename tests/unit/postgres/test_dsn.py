from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import SecretStr

from remediator.connectors.postgres.dsn import (
    database_of,
    libpq_target,
    password_of,
    redact,
    resolve_dsn,
    scrub,
    with_database,
)
from remediator.domain.errors import ConfigError, TemporaryError

DSN = "postgresql://app:s3cr%40t-pw@db.internal:5432/shop?sslmode=require"


async def test_from_an_environment_variable() -> None:
    dsn = await resolve_dsn(env="SHOP_DSN", environ={"SHOP_DSN": DSN + "\n"})
    assert dsn.get_secret_value() == DSN
    assert "s3cr" not in repr(dsn) and "s3cr" not in str(dsn)


async def test_from_a_mounted_secret_file(tmp_path: Path) -> None:
    path = tmp_path / "dsn"
    path.write_text(DSN + "\n")
    assert (await resolve_dsn(file=path)).get_secret_value() == DSN


async def test_from_a_secret_source() -> None:
    asked: list[str] = []

    async def source(name: str) -> str:
        asked.append(name)
        return DSN

    dsn = await resolve_dsn(secret="shop-db", secret_source=source)
    assert dsn.get_secret_value() == DSN and asked == ["shop-db"]


async def test_errors_name_the_source_never_the_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        await resolve_dsn(env="A", file=tmp_path / "f")
    with pytest.raises(ConfigError, match="environment variable NOPE is not set"):
        await resolve_dsn(env="NOPE", environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        await resolve_dsn(file=tmp_path / "missing")
    with pytest.raises(ConfigError, match="no secret source"):
        await resolve_dsn(secret="shop-db")
    (tmp_path / "kv").write_text("host=db password=hunter2-kv")
    with pytest.raises(ConfigError) as caught:
        await resolve_dsn(file=tmp_path / "kv")
    assert "hunter2" not in str(caught.value)


async def test_an_unreadable_file_is_temporary(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    with pytest.raises(TemporaryError):
        await resolve_dsn(file=tmp_path / "dir")


def test_redact_hides_the_password_wherever_it_is() -> None:
    assert redact(DSN) == "postgresql://app:***@db.internal:5432/shop?sslmode=require"
    assert redact(SecretStr(DSN)) == redact(DSN)
    assert (
        redact("postgres://app@h/db?password=pw&sslmode=disable")
        == "postgres://app@h/db?password=***&sslmode=disable"
    )
    assert redact("postgresql://h/db") == "postgresql://h/db"
    assert redact("host=h password='a b' user=u") == "host=h password=*** user=u"


def test_scrub_blanks_raw_and_encoded_password() -> None:
    text = f"failed for {DSN}; password s3cr@t-pw; encoded s3cr%40t-pw"
    out = scrub(text, SecretStr(DSN))
    assert "s3cr" not in out
    assert redact(DSN) in out


def test_libpq_target_keeps_the_password_out_of_argv() -> None:
    target = libpq_target(SecretStr(DSN), base_env={"PATH": "/bin", "PGSERVICE": "other"})
    assert target.conninfo == "postgresql://app@db.internal:5432/shop?sslmode=require"
    assert target.env["PGPASSWORD"] == "s3cr@t-pw"
    assert "PGSERVICE" not in target.env and target.env["PATH"] == "/bin"
    assert target.database == "shop"


def test_helpers() -> None:
    assert password_of(DSN) == "s3cr@t-pw"
    assert password_of("postgresql://u@h/d?password=x") == "x"
    assert password_of("postgresql://u@h/d") is None
    assert database_of(DSN) == "shop"
    moved = with_database(SecretStr(DSN), "other")
    assert moved.get_secret_value().startswith(
        "postgresql://app:s3cr%40t-pw@db.internal:5432/other?"
    )


def test_secretstr_stays_hidden_in_log_records(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    logging.getLogger("test").info("dsn is %s / %r", SecretStr(DSN), SecretStr(DSN))
    assert "s3cr" not in caplog.text


def test_unix_socket_dsn_keeps_its_empty_authority() -> None:
    # urlunsplit would turn it into "postgresql:/shop?...", which libpq rejects.
    socket_dsn = "postgresql:///shop?host=/run/postgresql&password=s3cr3t"
    target = libpq_target(SecretStr(socket_dsn))
    assert target.conninfo == "postgresql:///shop?host=%2Frun%2Fpostgresql"
    assert target.env["PGPASSWORD"] == "s3cr3t"
    assert redact(socket_dsn) == "postgresql:///shop?host=%2Frun%2Fpostgresql&password=***"
    moved = with_database(SecretStr(socket_dsn), "other")
    assert moved.get_secret_value() == "postgresql:///other?host=/run/postgresql&password=s3cr3t"
