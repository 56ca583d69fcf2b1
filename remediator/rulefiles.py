"""Read rule files from disk for the pure loader in ``remediator.domain.rules``."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

from remediator.domain.errors import ConfigError
from remediator.domain.rules import RulePack, load_rule_pack

RULE_FILE_SUFFIXES = (".yaml", ".yml")


def read_rule_files(path: str | Path) -> dict[str, str]:
    """File name -> text for a rule file, or for every ``*.yaml``/``*.yml`` directly in a
    directory (sorted by name; subdirectories such as ``prometheus/`` are not rule files).
    """
    root = Path(path)
    if root.is_file():
        candidates = [root]
    elif root.is_dir():
        candidates = sorted(
            child
            for child in root.iterdir()
            if child.is_file() and child.suffix in RULE_FILE_SUFFIXES
        )
    else:
        raise ConfigError(f"{root}: no such rule file or directory")
    files: dict[str, str] = {}
    for candidate in candidates:
        try:
            files[str(candidate)] = candidate.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{candidate}: cannot read rule file: {exc}") from exc
    return files


def load_rule_pack_from_path(path: str | Path) -> RulePack:
    """Read and load a rule pack; raises ``RuleFileError`` (a ``ConfigError``) listing
    every problem, or ``ConfigError`` when the path cannot be read."""
    return load_rule_pack(read_rule_files(path))


def rules_digest(files: Mapping[str, str]) -> str:
    """SHA-256 of the rule files' names (without their directory) and texts: the same
    pack mounted elsewhere has the same digest, any edit changes it."""
    digest = hashlib.sha256()
    for name in sorted(files, key=lambda n: Path(n).name):
        digest.update(Path(name).name.encode() + b"\0" + files[name].encode() + b"\0")
    return digest.hexdigest()


def load_rule_pack_and_origin(path: str | Path) -> tuple[RulePack, str]:
    """The pack, and what it came from as the journal records it next to an automation
    level change: the path and the files' digest. A file carries no author; who edited
    it is for the system that delivers it (git, the ConfigMap's audit log) to say."""
    files = read_rule_files(path)
    return load_rule_pack(files), f"rules {path} (sha256:{rules_digest(files)[:12]})"
