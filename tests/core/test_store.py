"""The store: migrations, trace writing off the request path, durability under kill -9, PostgreSQL."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest
from sqlalchemy import inspect, text

from fmstack.core.config import get_settings
from fmstack.core.store import open_store
from fmstack.core.store.traces import TraceWriter, add_feedback, count_traces, get_trace, list_traces
from tests.conftest import free_port
from tests.core.postgres import postgres_server


def row(i: int, **extra) -> dict:
    from fmstack.core.store.schema import utcnow

    return (
        dict(
            id=f"t-{i}",
            created_at=utcnow(),
            endpoint="chat.completions",
            model="m",
            status="ok",
            status_code=200,
            prompt_tokens=3,
            completion_tokens=5,
            cost=0.001,
            request={"i": i},
        )
        | extra
    )


def exercise(settings) -> None:
    sessions = open_store(settings)
    writer = TraceWriter(sessions)
    for i in range(100):
        writer.write(row(i))
    writer.flush()
    with sessions.begin() as s:
        assert count_traces(s) == 100
        add_feedback(s, "t-7", 1, "a better answer", None)
    with sessions() as s:
        trace = get_trace(s, "t-7")
        assert trace.request == {"i": 7} and trace.feedback[0].correction == "a better answer"
        assert [t.id for t in list_traces(s, limit=3, status="ok")]
    writer.close()


def newest_migration() -> str:
    from alembic.script import ScriptDirectory

    from fmstack.core.store.db import MIGRATIONS

    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def test_sqlite_is_migrated_in_wal_mode(home):
    sessions = open_store(get_settings())
    with sessions() as s:
        assert s.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert s.execute(text("SELECT version_num FROM alembic_version")).scalar() == newest_migration()
        assert {"traces", "feedback"} <= set(inspect(s.get_bind()).get_table_names())
    exercise(get_settings())
    open_store(get_settings())  # migrating again is a no-op


def test_one_bad_row_does_not_lose_the_batch(home):
    sessions = open_store(get_settings())
    writer = TraceWriter(sessions)
    writer.write(row(1))
    writer.write(row(1))  # duplicate primary key
    writer.write(row(2))
    writer.flush()
    with sessions() as s:
        assert {t.id for t in list_traces(s)} == {"t-1", "t-2"}


def test_committed_traces_survive_kill_9(home):
    script = textwrap.dedent("""
        import sys, time
        from fmstack.core.config import get_settings
        from fmstack.core.store import open_store
        from fmstack.core.store.traces import TraceWriter
        from tests.core.test_store import row
        writer = TraceWriter(open_store(get_settings()))
        for i in range(50):
            writer.write(row(i))
        writer.flush()
        print("committed", flush=True)
        while True:
            writer.write(row(1000 + int(time.time() * 1e6)))
            time.sleep(0.001)
    """)
    env = os.environ | {"PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "committed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with open_store(get_settings())() as s:
        ids = {t.id for t in list_traces(s, limit=100000)}
    assert {f"t-{i}" for i in range(50)} <= ids
    with open_store(get_settings())() as s:  # the database is not corrupt
        assert s.execute(text("PRAGMA integrity_check")).scalar() == "ok"


@pytest.mark.slow
def test_postgresql_works_the_same(home, monkeypatch):
    with postgres_server(free_port()) as url:
        monkeypatch.setenv("FMSTACK_DATABASE_URL", url)
        settings = get_settings()
        assert settings.db_url.startswith("postgresql+psycopg://")
        exercise(settings)
