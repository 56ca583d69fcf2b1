from __future__ import annotations

from remediator.connectors.postgres.alembic_runner import _ancestry, parse_history

HISTORY = """\
0002 -> 0003 (head), add users.nickname with an index
0001 -> 0002, add orders
<base> -> 0001, create users
"""


def test_linear_history_oldest_first() -> None:
    downs, order = parse_history(HISTORY)
    assert order == ("0001", "0002", "0003")
    assert downs == {"0001": (), "0002": ("0001",), "0003": ("0002",)}
    assert _ancestry(["0002"], downs) == ["0001", "0002"]


def test_merge_points_and_branches() -> None:
    text = (
        "(b1, b2) -> m1 (head) (mergepoint), merge\n"
        "a0 -> b2, branch two\n"
        "a0 -> b1, branch one\n"
        "<base> -> a0 (branchpoint), root\n"
    )
    downs, order = parse_history(text)
    assert downs["m1"] == ("b1", "b2")
    assert order[0] == "a0" and order[-1] == "m1"
    assert _ancestry(["m1"], downs) == ["a0", "b1", "b2", "m1"]
    assert parse_history("INFO  [alembic] noise\n\n") == ({}, ())
