"""The auth, TLS and response-size settings, and how the runtime builds from them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from remediator.domain.auth import Principal, Role, hash_token
from remediator.domain.errors import ConfigError
from remediator.rulefiles import load_rule_pack_from_path
from remediator.runtime import Runtime, approvers_by_role, auth_from_settings, check_bind_is_safe
from remediator.settings import load_settings

RULES = Path(__file__).resolve().parents[2] / "rules"
TOKEN = "alice-token-5e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b"


def principals(tmp_path: Path, text: str | None = None) -> Path:
    path = tmp_path / "principals.yaml"
    path.write_text(
        text
        or f'principals:\n  - name: alice\n    roles: [read, operate]\n    tokens: ["{hash_token(TOKEN)}"]\n'
    )
    return path


def test_the_principals_file_and_the_webhook_token_both_authenticate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REMEDIATOR_AUTH__PRINCIPALS_FILE", str(principals(tmp_path)))
    monkeypatch.setenv("REMEDIATOR_WEBHOOK_TOKEN", "hook")
    settings = load_settings()
    auth = auth_from_settings(settings)
    alice, hook = auth.authenticate(f"Bearer {TOKEN}"), auth.authenticate("Bearer hook")
    assert isinstance(alice, Principal) and alice.holds(Role.OPERATE)
    assert isinstance(hook, Principal) and hook.roles == {Role.INGEST}
    check_bind_is_safe(
        load_settings(
            overrides={"http": {"listen": "0.0.0.0:9095"}, "auth": {"principals_file": "p.yaml"}}
        )
    )


def test_a_bad_principals_file_stops_the_daemon_before_the_journal_opens(tmp_path: Path) -> None:
    bad = principals(tmp_path, "principals:\n  - name: a\n    roles: [root]\n    tokens: []\n")
    journal = tmp_path / "var" / "journal.db"
    settings = load_settings(
        overrides={
            "auth": {"principals_file": str(bad)},
            "journal": {"url": f"sqlite:///{journal}"},
        }
    )
    runtime = Runtime(settings, pack=load_rule_pack_from_path(RULES))
    with pytest.raises(ConfigError, match=r"principals\[0\] \(a\)\.roles\[0\]: unknown role"):
        asyncio.run(runtime.run())
    assert not journal.exists()


def test_tls_and_response_settings_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REMEDIATOR_HTTP__TLS_CERT_FILE", "/tls/tls.crt")
    monkeypatch.setenv("REMEDIATOR_HTTP__TLS_KEY_FILE", "/tls/tls.key")
    monkeypatch.setenv("REMEDIATOR_LIMITS__RESPONSE_BYTES", "65536")
    settings = load_settings()
    assert settings.http.tls and settings.http.tls_key_file == Path("/tls/tls.key")
    assert settings.limits.response_bytes == 65536
    monkeypatch.delenv("REMEDIATOR_LIMITS__RESPONSE_BYTES")
    assert load_settings().limits.response_bytes == 4 * 1024 * 1024
    assert load_settings().auth.max_failures == 10


def test_half_a_tls_setting_is_an_error_naming_the_field() -> None:
    with pytest.raises(ConfigError, match="http: tls_cert_file and tls_key_file must be set"):
        load_settings(overrides={"http": {"tls_cert_file": "/tls/tls.crt"}})


def test_an_escalation_knows_who_holds_each_approver_role() -> None:
    people = [
        Principal(name="lee", roles=frozenset({Role.OPERATE}), approver_roles=frozenset({"tech-lead"})),
        Principal(name="ann", roles=frozenset({Role.OPERATE}),
                  approver_roles=frozenset({"tech-lead", "dba"})),
        Principal(name="bob", roles=frozenset({Role.READ})),
    ]  # fmt: skip
    assert approvers_by_role(people) == {"dba": ("ann",), "tech-lead": ("ann", "lee")}
