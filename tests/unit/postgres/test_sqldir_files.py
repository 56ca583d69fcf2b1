from __future__ import annotations

from pathlib import Path

import pytest

from remediator.connectors.postgres.sqldir import discover, parse_table_name
from remediator.domain.errors import ConfigError


def test_discover_pairs_up_and_down_by_number(tmp_path: Path) -> None:
    for name in (
        "010_later.up.sql",
        "002_add_users_table.up.sql",
        "002_add_users_table.down.sql",
        "001_init.up.sql",
        "README.md",
        "003_bad name.up.sql",
    ):
        (tmp_path / name).write_text("SELECT 1;")
    found = discover(tmp_path)
    assert [m.version for m in found] == ["001_init", "002_add_users_table", "010_later"]
    assert found[0].down is None
    assert found[1].down == tmp_path / "002_add_users_table.down.sql"


def test_one_number_twice_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "002_a.up.sql").write_text("")
    (tmp_path / "002_b.up.sql").write_text("")
    with pytest.raises(ConfigError, match="share number 2"):
        discover(tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        discover(tmp_path / "nope")


def test_table_names() -> None:
    assert parse_table_name("schema_migrations") == (None, "schema_migrations")
    assert parse_table_name("app.schema_migrations") == ("app", "schema_migrations")
    for bad in ("a.b.c", "x; DROP TABLE y", '"q"'):
        with pytest.raises(ConfigError):
            parse_table_name(bad)
