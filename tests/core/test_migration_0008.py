"""Migration 0008 (human review) on a store holding earlier data: the three review tables are added, nothing else
changes, a review item cascades with its trace, and it downgrades cleanly."""

from sqlalchemy import inspect, text

from fmstack.core.config import get_settings
from tests.core.test_migration_0003 import alembic, engine_for, fill_0002

REVIEW_TABLES = {"review_policies", "review_stage_moves", "review_items"}


def test_0008_adds_the_review_tables_and_downgrades_cleanly(home):
    engine = engine_for(get_settings())
    alembic(engine, "upgrade", "0007")
    fill_0002(engine)
    before = set(inspect(engine).get_table_names())
    alembic(engine, "upgrade", "0008")
    assert set(inspect(engine).get_table_names()) == before | REVIEW_TABLES
    with engine.begin() as c:
        c.execute(
            text(
                "INSERT INTO review_items (created_at, app, trace_id, copy, stage, reason, status, answer, skipped_by) "
                "VALUES ('2026-01-02', 'shop', 't-old', 0, 'crawl', 'crawl', 'pending', 'hello', '[]')"
            )
        )
        assert c.execute(text("SELECT response_text FROM traces WHERE id = 't-old'")).scalar() == "hello"
        c.execute(text("DELETE FROM traces WHERE id = 't-old'"))  # its review goes with it
        assert c.execute(text("SELECT count(*) FROM review_items")).scalar() == 0
    alembic(engine, "downgrade", "0007")
    assert set(inspect(engine).get_table_names()) == before
