from __future__ import annotations

import pytest

from remediator.connectors.postgres.sqlscript import (
    ScriptSyntaxError,
    analyse,
    split_statements,
)


def test_splits_on_semicolons_outside_quotes_comments_and_dollar_bodies() -> None:
    sql = """
    -- a comment; not a statement
    CREATE TABLE t (a text DEFAULT 'x;y', "odd;name" int);
    /* block; /* nested; */ still comment */
    CREATE FUNCTION f() RETURNS int AS $body$ BEGIN; RETURN 1; END $body$ LANGUAGE plpgsql;
    INSERT INTO t (a) VALUES (E'it\\'s; fine'), ('it''s; fine');
    SELECT $$;$$
    """
    statements = split_statements(sql)
    assert len(statements) == 4
    # Comments before a statement are not part of it (PostgreSQL's parser says where
    # each statement starts).
    assert statements[0].startswith("CREATE TABLE t (a text DEFAULT 'x;y'")
    assert statements[1].startswith("CREATE FUNCTION f()")
    assert "$body$ BEGIN; RETURN 1; END $body$" in statements[1]
    assert statements[3] == "SELECT $$;$$"


def test_parameters_and_identifiers_with_dollars_are_not_quotes() -> None:
    assert split_statements("SELECT $1; SELECT a$b$ FROM t; SELECT 2") == [
        "SELECT $1",
        "SELECT a$b$ FROM t",
        "SELECT 2",
    ]


def test_comment_only_pieces_are_dropped() -> None:
    assert split_statements("SELECT 1;\n-- trailing comment\n") == ["SELECT 1"]
    assert split_statements("-- nothing\n/* at all */") == []


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("DROP INDEX CONCURRENTLY users_email_idx;", "CONCURRENTLY"),
        ("create index concurrently i on t (a)", "CONCURRENTLY"),
        ("REINDEX INDEX CONCURRENTLY i", "CONCURRENTLY"),
        ("VACUUM ANALYZE t", "VACUUM"),
        ("DROP DATABASE old", "CREATE/DROP DATABASE"),
        ("ALTER SYSTEM SET work_mem = '8MB'", "ALTER SYSTEM"),
        ("-- remediator: no-transaction\nSELECT 1", "marked"),
    ],
)
def test_statements_that_cannot_run_in_a_transaction(sql: str, reason: str) -> None:
    info = analyse(sql)
    assert not info.transactional
    assert any(reason in why for why in info.non_transactional)


@pytest.mark.parametrize(
    "sql",
    [
        "DROP INDEX users_email_idx; ALTER TABLE t DROP COLUMN c;",
        "COMMENT ON TABLE t IS 'built concurrently; then vacuum';",
        "-- we used to VACUUM here, and CREATE INDEX CONCURRENTLY\nSELECT 1",
        'ALTER TABLE t RENAME COLUMN "concurrently" TO c',
        "DO $$ BEGIN PERFORM 1; END $$",
        "ANALYZE t",  # unlike VACUUM, allowed in a transaction
        "REINDEX INDEX i",
    ],
)
def test_ordinary_scripts_are_transactional(sql: str) -> None:
    info = analyse(sql)
    assert info.transactional, info


def test_a_script_with_its_own_transaction_control_is_not_wrapped() -> None:
    info = analyse("BEGIN;\nDROP TABLE t;\nCOMMIT;")
    assert info.transaction_control and not info.transactional
    assert info.non_transactional == ()


BEGIN_ATOMIC = """
DROP FUNCTION IF EXISTS order_total(int);
CREATE FUNCTION order_total(order_id int) RETURNS bigint
    LANGUAGE sql
BEGIN ATOMIC
    SELECT sum(amount_cents) FROM orders WHERE id = order_id;
    SELECT 0;
END;
-- the END above closes the body; it is no COMMIT
"""


def test_a_begin_atomic_body_is_one_statement_and_transactional() -> None:
    info = analyse(BEGIN_ATOMIC)
    assert len(info.statements) == 2
    assert info.statements[1].startswith("CREATE FUNCTION order_total")
    assert info.statements[1].endswith("SELECT 0;\nEND")
    assert info.transactional, info
    assert not info.transaction_control


def test_a_script_postgres_cannot_parse_is_refused_with_its_line() -> None:
    with pytest.raises(ScriptSyntaxError) as bad:
        analyse("SELECT 1;\nDROP TABLEE t;")
    assert bad.value.line == 2
    assert "syntax error" in str(bad.value)


def test_statements_after_multibyte_text_are_cut_where_they_start() -> None:
    # The parser counts bytes; the statements must still be cut on characters.
    assert split_statements("SELECT 'héllo; wörld';\nSELECT 'ß'; DROP TABLE t") == [
        "SELECT 'héllo; wörld'",
        "SELECT 'ß'",
        "DROP TABLE t",
    ]
