"""Test certificates made with the openssl command: a CA, a server certificate for
127.0.0.1 (only), a client certificate it signed, and a client certificate of another CA."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path  # signed by a CA the server does not trust
    stranger_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(
        ["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"openssl {args}: {result.stderr}"


def _ca(directory: Path, name: str) -> None:
    _openssl(
        "req", "-x509", *_EC, "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
        "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory,
    )  # fmt: skip


def _leaf(directory: Path, name: str, *, ca: str, extensions: str) -> None:
    _openssl("req", *_EC, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
             cwd=directory)  # fmt: skip
    (directory / f"{name}.ext").write_text(
        "authorityKeyIdentifier=keyid,issuer\nsubjectKeyIdentifier=hash\n"
        "basicConstraints=critical,CA:FALSE\n" + extensions
    )
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext",
        cwd=directory,
    )  # fmt: skip


def make_pki(directory: Path) -> Pki:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    _ca(directory, "ca")
    _ca(directory, "other-ca")
    _leaf(directory, "server", ca="ca",
          extensions="subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")  # fmt: skip
    _leaf(directory, "operator", ca="ca", extensions="extendedKeyUsage=clientAuth\n")
    _leaf(directory, "stranger", ca="other-ca", extensions="extendedKeyUsage=clientAuth\n")
    return Pki(
        ca=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "operator.crt",
        client_key=directory / "operator.key",
        stranger_cert=directory / "stranger.crt",
        stranger_key=directory / "stranger.key",
    )
