"""``remediator config``: the effective settings (``show``), their JSON Schema
(``schema``) and the settings reference docs/configuration.md (``doc``).

The reference is generated from the Settings model, so a setting cannot exist without
appearing there; a unit test fails when the committed file is not what ``doc`` prints.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_settings import NoDecode

from remediator.cli.common import CliError, add_settings_flags, settings_of, with_examples
from remediator.settings import Settings

__all__ = ["configuration_markdown", "register", "settings_schema"]

ENV_PREFIX = "REMEDIATOR_"
NESTED = "__"
REGENERATE = "remediator config doc > docs/configuration.md"

# Defaults computed at start-up, described instead of evaluated: the document must be
# the same on every machine.
_FACTORY_DEFAULTS: dict[Callable[[], Any], str] = {socket.gethostname: "the host name"}

EPILOG = with_examples(
    f"""\
    remediator config show --config /etc/remediator/config.yaml
    remediator config schema > remediator.schema.json   # for editors and CI linting
    {REGENERATE}
    remediator config doc --check docs/configuration.md  # exit 1 when it is stale
    """
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    config = sub.add_parser(
        "config",
        help="Inspect settings: effective values, JSON Schema, reference.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config_sub = config.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)
    show = config_sub.add_parser(
        "show",
        help="Print the effective settings, secrets masked.",
        epilog=with_examples("REMEDIATOR_LOG__FORMAT=json remediator config show --config c.yaml"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_settings_flags(show)
    show.set_defaults(func=cmd_config_show)
    schema = config_sub.add_parser(
        "schema",
        help="Print the JSON Schema of the settings file (secrets: writeOnly, no value).",
        epilog=with_examples("remediator config schema > remediator.schema.json"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    schema.set_defaults(func=cmd_config_schema)
    doc = config_sub.add_parser(
        "doc",
        help="Print the settings reference (Markdown) that docs/configuration.md holds.",
        epilog=with_examples(f"{REGENERATE}\nremediator config doc --check docs/configuration.md"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    doc.add_argument(
        "--check",
        type=Path,
        metavar="FILE",
        help="Print nothing; exit 1 when FILE differs from the generated reference.",
    )
    doc.set_defaults(func=cmd_config_doc)


def cmd_config_show(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    sys.stdout.write(orjson.dumps(settings.redacted(), option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


def cmd_config_schema(args: argparse.Namespace) -> int:
    sys.stdout.write(json.dumps(settings_schema(), indent=2) + "\n")
    return 0


def cmd_config_doc(args: argparse.Namespace) -> int:
    generated = configuration_markdown()
    if args.check is None:
        sys.stdout.write(generated)
        return 0
    try:
        current = args.check.read_text()
    except OSError as exc:
        raise CliError(f"{args.check}: cannot be read ({exc.strerror})") from None
    if current != generated:
        raise CliError(f"{args.check} is not current; regenerate it: {REGENERATE}")
    return 0


def settings_schema() -> dict[str, Any]:
    """JSON Schema (2020-12) of what the --config file may hold.

    Built from the Settings class, never from loaded settings: no configured value, and
    so no secret, can reach it. Secrets are ``format: password, writeOnly: true``.
    """
    schema = Settings.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **schema,
        "title": "remediator settings",
    }


# -- the reference ------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    path: tuple[str, ...]
    info: FieldInfo
    schema: dict[str, Any]

    @property
    def key(self) -> str:
        return ".".join(self.path)

    @property
    def env(self) -> str:
        return ENV_PREFIX + NESTED.join(part.upper() for part in self.path)


@dataclass(frozen=True)
class Group:
    name: str | None  # None: the top-level settings
    summary: str
    settings: tuple[Setting, ...]


def groups() -> Iterator[Group]:
    """The top-level settings, then each group in the order Settings declares them."""
    schema = Settings.model_json_schema()
    definitions = schema["$defs"]
    top: list[Setting] = []
    for name, info in Settings.model_fields.items():
        model = _group_model(info)
        if model is None:
            top.append(Setting((name,), info, schema["properties"][name]))
            continue
        properties = definitions[model.__name__]["properties"]
        yield Group(
            name=name,
            summary=_summary(model),
            settings=tuple(
                Setting((name, field), field_info, properties[field])
                for field, field_info in model.model_fields.items()
            ),
        )
    yield Group(name=None, summary="Settings outside any group.", settings=tuple(top))


def _group_model(info: FieldInfo) -> type[BaseModel] | None:
    annotation = info.annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _summary(model: type[BaseModel]) -> str:
    return " ".join((model.__doc__ or "").strip().split("\n\n")[0].split())


def configuration_markdown() -> str:
    ordered = list(groups())
    ordered = ordered[-1:] + ordered[:-1]  # the top-level settings first
    lines = [
        "# Configuration reference",
        "",
        f"<!-- Generated from remediator/settings.py by `{REGENERATE}`; do not edit. -->",
        "",
        "Every setting comes from, highest precedence first: a command-line flag (where",
        "one exists, e.g. `--listen`), the environment, the YAML file given with",
        "`--config`, the default below. The YAML key is the setting's path (`http:` then",
        "`listen:`); the environment variable is `REMEDIATOR_` plus the path in upper case,",
        "with `__` between levels. Lists and maps in the environment are JSON",
        '(`["service","app"]`, `{"checkout":"C0123"}`); lists marked *comma list* also',
        "take `a,b`.",
        "",
        "A secret (type *secret*) is masked in `remediator config show` and in logs; prefer",
        "its `_file` variant, a mounted Secret. `remediator config schema` prints the JSON",
        "Schema of the YAML file (for editors and CI).",
        "",
    ]
    for group in ordered:
        title = f"`{group.name}`" if group.name else "Top level"
        lines += [f"## {title}", "", group.summary, ""]
        lines += [
            "| environment variable | YAML key | type | default | description |",
            "|---|---|---|---|---|",
        ]
        lines += [_row(setting) for setting in group.settings]
        lines.append("")
    return "\n".join(lines)


def _row(setting: Setting) -> str:
    cells = (
        f"`{setting.env}`",
        f"`{setting.key}`",
        type_text(setting),
        default_text(setting),
        setting.info.description or "",
    )
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def type_text(setting: Setting) -> str:
    text = _schema_type(setting.schema)
    if any(isinstance(item, NoDecode) or item is NoDecode for item in setting.info.metadata):
        text += " (comma list)"
    return text


def _schema_type(schema: dict[str, Any]) -> str:
    if "anyOf" in schema:
        return " or ".join(_schema_type(option) for option in schema["anyOf"])
    if "enum" in schema:
        return "one of " + ", ".join(f"`{value}`" for value in schema["enum"])
    if "const" in schema:
        return f"`{schema['const']}`"
    kind = schema.get("type")
    if kind == "null":
        return "none"
    if kind == "string":
        return _string_type(schema)
    if kind in ("integer", "number"):
        return _number_type(schema)
    if kind == "boolean":
        return "boolean"
    if kind == "array":
        return "list of " + _plural(_schema_type(schema.get("items", {}))) + _length(schema)
    if kind == "object":
        values = _plural(_schema_type(schema.get("additionalProperties", {})))
        return f"map of {values}"
    raise ValueError(f"no rendering for JSON Schema {schema}")


def _string_type(schema: dict[str, Any]) -> str:
    if schema.get("format") == "password":
        return "secret"
    if schema.get("format") == "path":
        return "path"
    if "pattern" in schema:
        return f"string matching `{schema['pattern']}`"
    return "string" + _length(schema, "minLength")


def _number_type(schema: dict[str, Any]) -> str:
    bounds = [
        f"{sign} {schema[key]}"
        for key, sign in (
            ("minimum", "≥"),
            ("exclusiveMinimum", ">"),
            ("maximum", "≤"),
            ("exclusiveMaximum", "<"),
        )
        if key in schema
    ]
    kind = "integer" if schema["type"] == "integer" else "number"
    return " ".join([kind, *bounds]) if len(bounds) < 2 else f"{kind} {', '.join(bounds)}"


def _length(schema: dict[str, Any], key: str = "minItems") -> str:
    return f", at least {schema[key]}" if key in schema else ""


def _plural(kind: str) -> str:
    return {"string": "strings", "list of strings": "lists of strings"}.get(kind, kind)


def default_text(setting: Setting) -> str:
    factory = setting.info.default_factory
    if factory is not None:
        if factory not in _FACTORY_DEFAULTS:
            raise ValueError(f"{setting.key}: describe its default_factory in _FACTORY_DEFAULTS")
        return _FACTORY_DEFAULTS[factory]
    if "default" not in setting.schema:
        raise ValueError(f"{setting.key}: no default")
    value = setting.schema["default"]
    if value is None:
        return "none"
    if isinstance(value, str):
        return f"`{value}`" if value else '`""`'
    return f"`{json.dumps(value, ensure_ascii=False)}`"
