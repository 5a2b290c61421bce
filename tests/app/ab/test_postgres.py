"""Routes, the report and the dashboard on PostgreSQL: the same numbers as on SQLite (the time buckets and the
concatenated values are written differently for each)."""

from __future__ import annotations

import pytest

from fmstack.app.ab import build_report, overview
from tests.app.ab.helpers import A, B, routes
from tests.app.ab.test_dashboard import SINCE, UNTIL, fill
from tests.conftest import free_port
from tests.core.postgres import postgres_server

pytestmark = pytest.mark.slow


def test_the_same_numbers_on_postgresql(home):
    with postgres_server(free_port()) as url:
        store = routes(home, url)
        sessions = fill(store)
        d = overview(sessions, SINCE, UNTIL)
        t = d["totals"]
        assert (t["requests"], t["errors"], t["automated_share"]) == (8, 1, 6 / 7)
        assert t["latency_ms_p95"] == pytest.approx(1700)
        assert (t["approval_rate"], t["human_seconds_per_item"], t["cost"]) == (0.5, 30.0, pytest.approx(1.75))
        assert sum(p["requests"] for p in d["series"]) == 8 and d["series"][6]["latency_ms_p50"] == 500
        assert d["stages"] == {"support": "crawl"} and [c["action"] for c in d["route_changes"]] == ["create"]
        report = build_report(sessions, store.get("shop"))
        assert {v.name: v.answered for v in report.variants} == {A: 4, B: 2}  # with the one before the range
        assert report.variants[0].estimates["latency"].mean == pytest.approx((100 + 200 + 300 + 9999) / 4)
        store.promote("shop", B)
        assert store.rollback("shop").weights == {A: 60, B: 40}
