"""Every setting is described and defaulted; its JSON Schema hides secrets; the committed
reference docs/configuration.md is exactly what ``remediator config doc`` prints."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from remediator.cli import main
from remediator.cli.config import REGENERATE, configuration_markdown, settings_schema
from remediator.settings import Settings

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("REMEDIATOR_"):
            monkeypatch.delenv(name)


def leaf_settings(
    model: type[BaseModel] = Settings, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], FieldInfo]]:
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from leaf_settings(annotation, (*prefix, name))
        else:
            yield (*prefix, name), info


def is_secret(info: FieldInfo) -> bool:
    return SecretStr in (info.annotation, *getattr(info.annotation, "__args__", ()))


def env_name(path: tuple[str, ...]) -> str:
    return "REMEDIATOR_" + "__".join(part.upper() for part in path)


def test_the_walk_sees_every_group_and_the_top_level() -> None:
    paths = {".".join(path) for path, _ in leaf_settings()}
    assert {"http.listen", "database.backup_root", "kafka.sasl_password", "dry_run"} <= paths
    assert len(paths) >= 60


def test_every_setting_has_a_description_and_a_default() -> None:
    undescribed = [".".join(p) for p, info in leaf_settings() if not (info.description or "")]
    required = [".".join(p) for p, info in leaf_settings() if info.is_required()]
    assert undescribed == []
    assert required == []


def test_settings_build_from_defaults_alone() -> None:
    assert Settings().database.backup_root == Path("/var/lib/remediator/backups")


def test_schema_is_valid_json_schema_and_accepts_the_defaults() -> None:
    schema = settings_schema()
    Draft202012Validator.check_schema(schema)
    defaults = Settings().model_dump(mode="json")
    defaults["journal"]["url"] = "sqlite:///var/remediator.db"  # dumped masked
    assert list(Draft202012Validator(schema).iter_errors(defaults)) == []


@pytest.mark.parametrize(
    ("document", "where"),
    [
        ({"http": {"listn": "0.0.0.0:9095"}}, "listn"),
        ({"log": {"format": "xml"}}, "xml"),
        ({"journal": {"max_batch": 0}}, "0"),
        ({"email": {"smtp_port": 70000}}, "70000"),
    ],
)
def test_schema_refuses_what_the_settings_refuse(document: dict[str, object], where: str) -> None:
    errors = list(Draft202012Validator(settings_schema()).iter_errors(document))
    assert errors and where in errors[0].message
    with pytest.raises(ValueError):
        Settings(**document)  # type: ignore[arg-type]


def test_every_secret_is_write_only_without_a_value_in_the_schema() -> None:
    schema = settings_schema()
    secrets = [path for path, info in leaf_settings() if is_secret(info)]
    assert len(secrets) >= 7
    for path in secrets:
        node = schema if len(path) == 1 else schema["$defs"][_model_of(path[0])]
        prop = node["properties"][path[-1]]
        options = prop.get("anyOf", [prop])
        string = next(option for option in options if option.get("type") == "string")
        assert string["format"] == "password" and string["writeOnly"] is True, path
        assert prop.get("default") in (None, "sqlite:///var/remediator.db"), path


def _model_of(group: str) -> str:
    annotation = Settings.model_fields[group].annotation
    assert isinstance(annotation, type)
    return annotation.__name__


def test_config_schema_prints_no_configured_secret(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REMEDIATOR_WEBHOOK_TOKEN", "tok-4c1d9e")
    monkeypatch.setenv("REMEDIATOR_JOURNAL__URL", "postgresql://u:pw-8f3a2b@db/x")
    assert main(["config", "schema"]) == 0
    printed = capsys.readouterr().out
    assert json.loads(printed) == settings_schema()
    assert "tok-4c1d9e" not in printed and "pw-8f3a2b" not in printed


def test_reference_is_current() -> None:
    assert REFERENCE.read_text() == configuration_markdown(), (
        f"docs/configuration.md is stale; regenerate it: PYTHONPATH=. python -m {REGENERATE}"
    )


def test_reference_tables_hold_every_setting_once() -> None:
    rows = re.findall(
        r"^\| `(REMEDIATOR_[A-Z0-9_]+)` \| `([a-z0-9_.]+)` \|", REFERENCE.read_text(), re.M
    )
    expected = [(env_name(path), ".".join(path)) for path, _ in leaf_settings()]
    assert sorted(rows) == sorted(expected)
    # A blank line inside a table ends it: each group's rows must follow its header.
    for table in re.split(r"\n\n", REFERENCE.read_text()):
        if table.startswith("| environment variable"):
            assert all(line.startswith("|") for line in table.splitlines())


def test_the_reference_names_each_secret_type_and_default_honestly() -> None:
    text = configuration_markdown()
    assert (
        "| `REMEDIATOR_KAFKA__SASL_PASSWORD` | `kafka.sasl_password` | secret or none | none |"
        in text
    )
    assert (
        "| `REMEDIATOR_KUBERNETES__INSTANCE_ID` | `kubernetes.instance_id` | string | the host name |"
        in text
    )
    assert (
        "`REMEDIATOR_DATABASE__BACKUP_ROOT` | `database.backup_root` | path | `/var/lib/remediator/backups` |"
        in text
    )


def test_config_doc_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    current = tmp_path / "configuration.md"
    current.write_text(configuration_markdown())
    assert main(["config", "doc", "--check", str(current)]) == 0
    current.write_text(configuration_markdown().replace("HOST:PORT", "HOST"))
    assert main(["config", "doc", "--check", str(current)]) == 1
    assert "not current" in capsys.readouterr().err
    assert main(["config", "doc"]) == 0
    assert capsys.readouterr().out == configuration_markdown()
