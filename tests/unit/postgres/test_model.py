from __future__ import annotations

import pytest

from remediator.connectors.postgres.model import MigrationStatus

STATUS = MigrationStatus(
    kind="sqldir",
    applied=("001_a", "002_add_users_table", "003_c"),
    pending=("004_d",),
)


def test_find_by_full_name_number_or_base() -> None:
    assert STATUS.current == "003_c"
    assert STATUS.find("002_add_users_table") == "002_add_users_table"
    assert STATUS.find("002") == "002_add_users_table"
    assert STATUS.find("004") == "004_d"
    assert STATUS.find("base") is None
    with pytest.raises(LookupError, match="no migration"):
        STATUS.find("009")


def test_ambiguous_number() -> None:
    status = MigrationStatus(kind="sqldir", applied=("1_a", "1_b"))
    with pytest.raises(LookupError, match="ambiguous"):
        status.find("1")


def test_after_lists_newest_first() -> None:
    assert STATUS.after("001_a") == ("003_c", "002_add_users_table")
    assert STATUS.after("003_c") == ()
    assert STATUS.after(None) == ("003_c", "002_add_users_table", "001_a")
    assert MigrationStatus(kind="x", applied=()).current is None
