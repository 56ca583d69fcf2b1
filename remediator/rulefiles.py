"""Read rule files from disk for the pure loader in ``remediator.domain.rules``."""

from __future__ import annotations

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
