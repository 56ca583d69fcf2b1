"""Principals, credentials and the failed-authentication throttle, without a server."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from remediator.domain.auth import (
    Principal,
    Role,
    forbidden,
    hash_token,
)
from remediator.domain.errors import ConfigError
from remediator.ingress.auth import (
    ANONYMOUS,
    Authenticator,
    AuthFailure,
    FailedAuthLimiter,
    WebhookCredential,
    load_principals,
    subject_text,
)

ALICE_TOKEN = "alice-token-1f2e3d4c5b6a79881726354453627180"
BOB_TOKEN = "bob-token-a1b2c3d4e5f60718293a4b5c6d7e8f90"
HOOK_TOKEN = "hook-token-0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "principals.yaml"
    path.write_text(text)
    return path


GOOD = f"""\
principals:
  - name: alertmanager
    roles: [ingest]
    tokens: ["{hash_token(HOOK_TOKEN)}"]
  - name: alice
    roles: [read, operate]
    approver_roles: [dba, tech-lead]
    tokens: ["{hash_token(ALICE_TOKEN)}"]
    certificate_subjects: ["CN=alice,OU=sre,O=Example"]
  - name: grafana
    roles: [read]
    certificate_cns: [grafana]
  - name: root
    roles: [admin]
    tokens: ["{hash_token(BOB_TOKEN)}"]
"""


def test_hash_token_is_sha256_hex_of_the_token() -> None:
    assert hash_token("x" * 40) == "sha256:" + hashlib.sha256(b"x" * 40).hexdigest()


def test_a_good_file_maps_tokens_and_certificates_to_their_principals(tmp_path: Path) -> None:
    auth = Authenticator(principals=load_principals(write(tmp_path, GOOD)))
    alice = auth.authenticate(f"Bearer {ALICE_TOKEN}")
    assert isinstance(alice, Principal)
    assert (alice.name, alice.roles, alice.approver_roles) == (
        "alice", {Role.READ, Role.OPERATE}, {"dba", "tech-lead"}
    )  # fmt: skip
    hook = auth.authenticate(f"Bearer {HOOK_TOKEN}")
    assert isinstance(hook, Principal) and hook.name == "alertmanager"
    assert hook.holds(Role.INGEST) and not hook.holds(Role.READ)
    root = auth.authenticate(f"Bearer {BOB_TOKEN}")
    assert isinstance(root, Principal) and all(root.holds(role) for role in Role)
    by_subject = auth.authenticate(
        None, certificate(("O", "Example"), ("OU", "sre"), ("CN", "alice"))
    )
    assert isinstance(by_subject, Principal) and by_subject.name == "alice"
    by_cn = auth.authenticate(None, certificate(("O", "Elsewhere"), ("CN", "grafana")))
    assert isinstance(by_cn, Principal) and by_cn.name == "grafana"


def certificate(*attributes: tuple[str, str]) -> dict[str, object]:
    """A getpeercert() dict: subject RDNs, least specific first, long attribute names."""
    long = {"CN": "commonName", "O": "organizationName", "OU": "organizationalUnitName"}
    return {"subject": tuple(((long[k], v),) for k, v in attributes)}


@pytest.mark.parametrize(
    ("header", "cert", "expected"),
    [
        (None, None, AuthFailure.MISSING),
        ("", None, AuthFailure.MISSING),
        ("Bearer wrong-token", None, AuthFailure.INVALID),
        (f"Bearer {ALICE_TOKEN}x", None, AuthFailure.INVALID),
        (f"Bearer {ALICE_TOKEN[:-1]}", None, AuthFailure.INVALID),
        (f"Token {ALICE_TOKEN}", None, AuthFailure.INVALID),
        ("Basic " + base64.b64encode(f"alice:{ALICE_TOKEN}".encode()).decode(), None,
         AuthFailure.INVALID),  # no basic auth for principals
        (hash_token(ALICE_TOKEN), None, AuthFailure.INVALID),
        (f"Bearer {hash_token(ALICE_TOKEN)}", None, AuthFailure.INVALID),  # the hash is no token
        (None, certificate(("CN", "mallory")), AuthFailure.INVALID),
        (None, certificate(("CN", "alice")), AuthFailure.INVALID),  # subject, not CN, for alice
        (None, certificate(("CN", "grafana"), ("CN", "alice")), AuthFailure.INVALID),  # two CNs
        # The header decides: a wrong token is not rescued by a good certificate.
        ("Bearer wrong-token", certificate(("CN", "grafana")), AuthFailure.INVALID),
    ],
)  # fmt: skip
def test_what_is_not_a_known_credential_fails(
    tmp_path: Path, header: str | None, cert: dict[str, object] | None, expected: AuthFailure
) -> None:
    auth = Authenticator(principals=load_principals(write(tmp_path, GOOD)))
    assert auth.authenticate(header, cert) is expected


def test_the_webhook_credential_is_an_ingest_only_principal(tmp_path: Path) -> None:
    auth = Authenticator(
        principals=load_principals(write(tmp_path, GOOD)),
        webhook=WebhookCredential(bearer_token="legacy", basic_user="am", basic_password="pw"),
    )
    for header in ("Bearer legacy", "Basic " + base64.b64encode(b"am:pw").decode()):
        hook = auth.authenticate(header)
        assert isinstance(hook, Principal)
        assert (hook.name, hook.roles) == ("webhook", {Role.INGEST})
    assert auth.authenticate("Basic " + base64.b64encode(b"am:nope").decode()) is (
        AuthFailure.INVALID
    )
    assert auth.challenge() == 'Bearer realm="remediator", Basic realm="remediator"'
    assert "legacy" not in repr(auth) and "pw" not in repr(auth)


def test_without_any_credential_everyone_is_anonymous() -> None:
    auth = Authenticator(webhook=WebhookCredential())
    assert not auth.enabled
    assert auth.authenticate(None) is ANONYMOUS
    assert auth.authenticate("Bearer anything") is ANONYMOUS


def test_the_403_message_names_the_role_and_what_the_principal_has() -> None:
    reader = Principal(name="grafana", roles=frozenset({Role.READ}))
    assert forbidden(reader, Role.OPERATE) == (
        "forbidden: role 'operate' required (principal 'grafana' has: read)"
    )


# -- the file is checked strictly; errors name the file and the entry, never a value -------


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("principals:\n  - name: a\n    roles: [read]\n    tokens: [{h}]\n    colour: red\n",
         ["principals[0] (a).colour: unknown key"]),
        ("principals:\n  - name: a\n    roles: [reader]\n    tokens: [{h}]\n",
         ["principals[0] (a).roles[0]: unknown role (expected one of ingest, read, operate, "
          "admin)"]),
        ("principals:\n  - name: a\n    roles: []\n    tokens: [{h}]\n",
         ["principals[0] (a).roles: "]),
        ("principals:\n  - name: a\n    roles: [read]\n    tokens: [{h}]\n"
         "  - name: a\n    roles: [read]\n    tokens: [{h2}]\n",
         ["principals[1] (a) has the name that principals[0] (a) has too"]),
        ("principals:\n  - name: a\n    roles: [read]\n    tokens: [{h}]\n"
         "  - name: b\n    roles: [operate]\n    tokens: [{h}]\n",
         ["principals[1] (b) has a token that principals[0] (a) has too"]),
        ("principals:\n  - name: a\n    roles: [read]\n    tokens: [{h}, {h}]\n",
         ["principals[0] (a) lists a token twice"]),
        ("principals:\n  - name: a\n    roles: [read]\n    certificate_cns: [x]\n"
         "  - name: b\n    roles: [read]\n    certificate_cns: [x]\n",
         ["principals[1] (b) has a certificate CN that principals[0] (a) has too"]),
        ("principals:\n  - name: a\n    roles: [read]\n    tokens: [{token}]\n",
         ["principals[0] (a).tokens[0]: not sha256:<64 lower-case hex digits>",
          "remediator auth hash-token"]),
        ("principals:\n  - name: a\n    roles: [read]\n",
         ["principals[0] (a): no credential"]),
        ("principals:\n  - name: 'a b'\n    roles: [read]\n    tokens: [{h}]\n",
         ["principals[0].name: letters, digits"]),
        ("principals:\n  - name: a\n    roles: [read]\n    approver_roles: ['dba\\n']\n"
         "    tokens: [{h}]\n", ["principals[0] (a).approver_roles[0]: "]),
        ("principals: []\n", ["principals: "]),
        ("- a\n- b\n", ["expected a mapping with a `principals:` list"]),
        ("principals:\n  - name: a\n   roles: [read]\n", ["not valid YAML (line 3, column"]),
        ("principals:\n  - {token}\n", ["principals[0]: "]),
    ],
)  # fmt: skip
def test_a_bad_file_is_a_config_error_naming_file_and_entry_never_a_value(
    tmp_path: Path, text: str, fragments: list[str]
) -> None:
    h, h2 = hash_token(ALICE_TOKEN), hash_token(BOB_TOKEN)
    path = write(tmp_path, text.format(h=h, h2=h2, token=ALICE_TOKEN))
    with pytest.raises(ConfigError) as caught:
        load_principals(path)
    message = str(caught.value)
    assert message.startswith(f"auth.principals_file {path}")
    for fragment in fragments:
        assert fragment in message, message
    for secret in (ALICE_TOKEN, h.split(":")[1], h2.split(":")[1]):
        assert secret not in message


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_principals(tmp_path / "nope.yaml")


def test_the_webhook_principal_cannot_share_a_name_or_token_with_the_file(tmp_path: Path) -> None:
    entries = load_principals(write(tmp_path, GOOD))
    with pytest.raises(ConfigError, match="has a token that principals\\[0\\]") as caught:
        Authenticator(principals=entries, webhook=WebhookCredential(bearer_token=HOOK_TOKEN))
    assert HOOK_TOKEN not in str(caught.value)
    named = write(tmp_path, GOOD.replace("name: alertmanager", "name: webhook"))
    with pytest.raises(ConfigError, match="has the name that principals\\[0\\] \\(webhook\\)"):
        Authenticator(
            principals=load_principals(named), webhook=WebhookCredential(bearer_token="x")
        )


# -- certificate subjects ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "text"),
    [
        (((("commonName", "alice"),),), "CN=alice"),
        (((("countryName", "DE"),), (("organizationName", "Example, Inc."),),
          (("commonName", "alice"),)), "CN=alice,O=Example\\, Inc.,C=DE"),
        (((("organizationName", "x"), ("organizationalUnitName", "y")),), "O=x+OU=y"),
        (((("commonName", " #lead"),),), "CN=\\ #lead"),
        (((("commonName", "trail "),),), "CN=trail\\ "),
        (((("emailAddress", "a@b"),),), "emailAddress=a@b"),
    ],
)  # fmt: skip
def test_subjects_read_as_rfc_4514(
    subject: tuple[tuple[tuple[str, str], ...], ...], text: str
) -> None:
    assert subject_text(subject) == text


# -- failed authentications are throttled per address --------------------------------------


def test_an_address_past_its_failures_waits_out_the_window() -> None:
    now = [100.0]
    limiter = FailedAuthLimiter(max_failures=3, window_seconds=60, max_clients=100,
                                monotonic=lambda: now[0])  # fmt: skip
    for _ in range(2):
        limiter.failed("10.0.0.1")
        now[0] += 1
    assert limiter.retry_after("10.0.0.1") is None
    limiter.failed("10.0.0.1")  # the third, at 102
    assert limiter.retry_after("10.0.0.1") == 58  # the first (100) leaves the window at 160
    assert limiter.retry_after("10.0.0.2") is None  # per address
    now[0] = 159.5
    assert limiter.retry_after("10.0.0.1") == 1
    now[0] = 160.0
    assert limiter.retry_after("10.0.0.1") is None
    limiter.failed("10.0.0.1")  # 160: the window now holds 101, 102, 160
    assert limiter.retry_after("10.0.0.1") == 1  # until 101 leaves it


def test_the_throttle_remembers_a_bounded_number_of_addresses() -> None:
    now = [0.0]
    limiter = FailedAuthLimiter(max_failures=2, window_seconds=60, max_clients=100,
                                monotonic=lambda: now[0])  # fmt: skip
    for n in range(10_000):
        limiter.failed(f"10.0.{n // 256}.{n % 256}")
        limiter.failed(f"10.0.{n // 256}.{n % 256}")
        assert len(limiter) <= 100
    assert limiter.retry_after("10.0.39.15") == 60  # the latest are remembered
    assert limiter.retry_after("10.0.0.0") is None  # the oldest were forgotten
    now[0] = 61.0
    limiter.failed("192.0.2.1")  # anything older than the window is dropped as it goes
    assert len(limiter) == 1
