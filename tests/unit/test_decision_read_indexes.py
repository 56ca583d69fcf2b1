"""The decision engine's per-batch reads use the partial indexes of migration 0013, so
they cost what a service's real history costs, not what a storm's skipped rows add."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from remediator.journal.sqlite import SqliteJournal, decisions

MIGRATION = (Path(decisions.__file__).parent / "migrations" / "0013_decision_reads.sql").read_text()


def test_the_queries_name_the_index_predicates_word_for_word() -> None:
    # SQLite uses a partial index only when the query names its WHERE terms.
    assert f"WHERE {decisions._NOT_SKIPPED};" in MIGRATION
    assert f"WHERE {decisions._AUTOMATED_ACTED};" in MIGRATION


async def test_history_and_circuit_reads_search_the_partial_indexes(tmp_path: Path) -> None:
    journal = SqliteJournal(path=tmp_path / "journal.db")
    await journal.open()
    await journal.close()
    conn = sqlite3.connect(tmp_path / "journal.db")
    try:
        history = conn.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM remediations"
            " INDEXED BY remediations_service_not_skipped"
            f" WHERE service = ? AND created_at >= ? AND {decisions._NOT_SKIPPED}",
            ("checkout", "2026-01-01"),
        ).fetchall()
        circuit = conn.execute(
            "EXPLAIN QUERY PLAN SELECT created_at FROM remediations"
            " INDEXED BY remediations_automated_acted"
            f" WHERE {decisions._AUTOMATED_ACTED} AND created_at >= ?",
            ("2026-01-01",),
        ).fetchall()
    finally:
        conn.close()
    assert "USING INDEX remediations_service_not_skipped (service=? AND created_at>?)" in str(
        history
    )
    assert "USING INDEX remediations_automated_acted (created_at>?)" in str(circuit)
