"""Migration 0003 (prompts) on a store that already holds 0002 data: tables and the traces column are added, no row
is lost or changed; on SQLite and PostgreSQL; and it downgrades cleanly."""

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event, inspect, text

from fmstack.core.config import get_settings
from fmstack.core.store import open_store
from fmstack.core.store.db import MIGRATIONS, _sqlite_pragmas
from fmstack.core.store.traces import get_trace
from tests.conftest import free_port
from tests.core.postgres import postgres_server


def alembic(engine, action: str, target: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        getattr(command, action)(config, target)


def engine_for(settings):
    if settings.db_url.startswith("sqlite"):
        settings.home.mkdir(parents=True, exist_ok=True)
        engine = create_engine(settings.db_url)
        event.listen(engine, "connect", _sqlite_pragmas)  # as the store opens it: foreign keys on
        return engine
    return create_engine(settings.db_url)


def fill_0002(engine) -> None:
    """Rows in every table 0001 and 0002 made, written with plain SQL as a 0002-era fmstack would have."""
    with engine.begin() as c:
        c.execute(
            text(
                "INSERT INTO traces (id, created_at, endpoint, model, app, prompt_version, request, response_text, "
                "prompt_tokens, completion_tokens, cost, status, status_code) VALUES ('t-old', '2026-01-02 03:04:05', "
                "'chat.completions', 'm', 'shop', NULL, '{\"messages\": []}', 'hello', 3, 5, 0.5, 'ok', 200)"
            )
        )
        c.execute(
            text(
                "INSERT INTO feedback (trace_id, created_at, rating, correction) VALUES ('t-old', '2026-01-02', 1, 'x')"
            )
        )
        c.execute(
            text(
                "INSERT INTO eval_runs (id, created_at, suite, status, config, metrics) "
                "VALUES ('run-1', '2026-01-02', 's', 'done', '{}', '[]')"
            )
        )
        c.execute(
            text(
                "INSERT INTO trace_scores (trace_id, created_at, metric, value) "
                "VALUES ('t-old', '2026-01-02', 'f1', 0.5)"
            )
        )


def check_upgraded(settings, engine) -> None:
    sessions = open_store(settings)  # migrates to the newest revision, 0003 among them
    names = set(inspect(engine).get_table_names())
    assert {"prompt_versions", "prompt_aliases", "prompt_alias_moves"} <= names
    assert "prompt_name" in {c["name"] for c in inspect(engine).get_columns("traces")}
    with sessions() as s:
        trace = get_trace(s, "t-old")  # kept, with its feedback and scores
        assert (trace.response_text, trace.cost, trace.app, trace.prompt_name, trace.prompt_version) == (
            "hello",
            0.5,
            "shop",
            None,
            None,
        )
        assert [(f.rating, f.correction) for f in trace.feedback] == [(1, "x")]
        assert [sc.value for sc in trace.scores] == [0.5]
        assert s.execute(text("SELECT count(*) FROM eval_runs")).scalar() == 1
    from fmstack.app.prompts import PromptStore

    store = PromptStore(sessions)
    store.save("p", {"user": "Hi {{ name }}"})
    store.set_alias("p", "production", 1)
    assert store.get("p@production").render({"name": "Ann"}) == [{"role": "user", "content": "Hi Ann"}]


def test_0003_upgrades_a_0002_sqlite_store_keeping_its_data(home):
    settings = get_settings()
    engine = engine_for(settings)
    alembic(engine, "upgrade", "0002")
    fill_0002(engine)
    check_upgraded(settings, engine)


def test_0003_alone_adds_and_downgrade_removes_only_its_own(home):
    """Up to 0003 exactly and back, checked in plain SQL (the ORM maps the newest schema)."""
    engine = engine_for(get_settings())
    alembic(engine, "upgrade", "0002")
    fill_0002(engine)
    alembic(engine, "upgrade", "0003")
    with engine.connect() as c:
        assert c.execute(text("SELECT prompt_name, response_text FROM traces")).one() == (None, "hello")
        assert c.execute(text("SELECT count(*) FROM prompt_versions")).scalar() == 0
    alembic(engine, "downgrade", "0002")
    assert "prompt_versions" not in inspect(engine).get_table_names()
    assert "prompt_name" not in {c["name"] for c in inspect(engine).get_columns("traces")}
    with engine.connect() as c:  # the column was dropped in place: no rebuild of traces cascaded to feedback
        assert c.execute(text("SELECT count(*) FROM feedback")).scalar() == 1
        assert c.execute(text("SELECT response_text FROM traces WHERE id = 't-old'")).scalar() == "hello"


@pytest.mark.slow
def test_0003_upgrades_a_0002_postgresql_store(home, monkeypatch):
    with postgres_server(free_port()) as url:
        monkeypatch.setenv("FMSTACK_DATABASE_URL", url)
        settings = get_settings()
        engine = engine_for(settings)
        alembic(engine, "upgrade", "0002")
        fill_0002(engine)
        check_upgraded(settings, engine)
        engine.dispose()
