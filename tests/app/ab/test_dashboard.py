"""The dashboard's numbers on fixed traces, checked by hand: totals, per app, per route/variant, over time, with
the review numbers (automated share, approval, human time), judge scores and the stage and route history."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.orm import sessionmaker

from fmstack.app.ab import overview
from fmstack.core.errors import FmstackError
from fmstack.core.store.schema import ReviewPolicy, ReviewStageMove
from tests.app.ab.helpers import NOW, A, B, add_trace, routes

SINCE, UNTIL = NOW - timedelta(hours=2), NOW + timedelta(minutes=1)


@pytest.fixture()
def data(home):
    return fill(routes(home))


def fill(store) -> sessionmaker:
    """The fixed traffic every number below is computed from by hand."""
    store.create("shop", {A: 60, B: 40}, actor="ann")
    s = store.sessions
    for latency in (100.0, 200.0, 300.0):
        add_trace(s, A, latency=latency, ttft=latency / 10, cost=0.25, tokens=(10, 5))
    add_trace(s, A, status="error", latency=5.0, cost=0.0, tokens=(10, 0))
    add_trace(s, B, latency=400.0, ttft=40.0, cost=0.5, scores=(("rubric", 0.8),))
    add_trace(s, B, latency=500.0, ttft=50.0, cost=0.5, scores=(("rubric", 0.6),), at=NOW - timedelta(minutes=90))
    add_trace(s, None, route=None, app="support", latency=1000.0, ttft=100.0, ratings=(1,),
              reviews=(("approved", "crawl", 40.0),))
    add_trace(s, None, route=None, app="support", latency=2000.0, ttft=200.0, ratings=(-1,),
              reviews=(("edited", "sampled", 20.0), ("approved", "sampled", 99.0)))
    add_trace(s, A, latency=9999.0, at=NOW - timedelta(hours=3))  # before the range
    with s.begin() as session:
        session.add(ReviewPolicy(app="support", stage="crawl", bars={}))
        session.add(ReviewStageMove(app="support", from_stage=None, to_stage="crawl", by="ann", numbers={}))
    return s


def by(rows, **keys):
    return next(r for r in rows if all(r[k] == v for k, v in keys.items()))


def test_totals_and_percentiles(data):
    d = overview(data, SINCE, UNTIL)
    t = d["totals"]
    assert (t["requests"], t["errors"], t["error_rate"]) == (8, 1, 1 / 8)
    # answered latencies 100 200 300 400 500 1000 2000; numpy's linear interpolation: p95 at rank 5.7 of 0..6
    assert (t["latency_ms_p50"], t["latency_ms_p95"], t["latency_ms_p99"]) == pytest.approx((400, 1700, 1940))
    assert t["ttft_ms_p50"] == pytest.approx(40)
    assert (t["prompt_tokens"], t["completion_tokens"], t["cost"]) == (80, 35, pytest.approx(1.75))
    assert (t["thumbs_up"], t["thumbs_down"], t["thumbs_up_share"]) == (1, 1, 0.5)
    assert t["automated_share"] == pytest.approx(6 / 7)  # 7 answered, 1 held in crawl
    assert (t["reviewed"], t["approval_rate"], t["human_seconds_per_item"]) == (2, 0.5, 30.0)
    assert t["scores"] == {"rubric": {"mean": pytest.approx(0.7), "n": 2}}


def test_per_app_and_per_variant(data):
    d = overview(data, SINCE, UNTIL)
    shop, support = by(d["apps"], app="shop-bot"), by(d["apps"], app="support")
    assert [r["app"] for r in d["apps"]] == ["shop-bot", "support"]  # the busiest first
    assert (shop["requests"], shop["latency_ms_p50"], shop["automated_share"], shop["approval_rate"]) == (
        6, 300.0, 1.0, None)
    assert (support["requests"], support["automated_share"], support["approval_rate"]) == (2, 0.5, 0.5)
    a, b = by(d["routes"], variant=A), by(d["routes"], variant=B)
    assert (a["route"], a["requests"], a["errors"], a["error_rate"], a["latency_ms_p50"]) == ("shop", 4, 1, 0.25, 200)
    assert (b["requests"], b["latency_ms_p50"], b["cost"], b["scores"]["rubric"]["mean"]) == (2, 450, 1.0, 0.7)
    assert len(d["routes"]) == 2  # traffic outside a route is not a variant


def test_series_history_and_filters(data):
    d = overview(data, SINCE, UNTIL)
    assert d["range"]["bucket_seconds"] == 300 and len(d["series"]) == 25
    assert sum(p["requests"] for p in d["series"]) == 8 and sum(p["errors"] for p in d["series"]) == 1
    early = [p for p in d["series"] if p["requests"] == 1 and p["latency_ms_p50"] == 500]
    assert len(early) == 1 and d["series"].index(early[0]) == 6  # 90 minutes before now: the 7th 5-minute bucket
    assert d["stages"] == {"support": "crawl"}
    assert [(m["app"], m["to"], m["by"]) for m in d["stage_moves"]] == [("support", "crawl", "ann")]
    assert [(c["route"], c["action"], c["after"], c["actor"]) for c in d["route_changes"]] == [
        ("shop", "create", {A: 60, B: 40}, "ann")
    ]
    assert d["known_apps"] == ["shop-bot", "support"] and d["known_routes"] == ["shop"]
    assert overview(data, SINCE, UNTIL, app="support")["totals"]["requests"] == 2
    assert overview(data, SINCE, UNTIL, route="shop")["totals"]["requests"] == 6
    assert overview(data, NOW - timedelta(hours=4), UNTIL)["totals"]["requests"] == 9
    empty = overview(data, NOW + timedelta(hours=1), NOW + timedelta(hours=2))
    assert empty["totals"]["requests"] == 0 and empty["totals"]["latency_ms_p50"] is None and empty["apps"] == []
    with pytest.raises(FmstackError) as err:
        overview(data, UNTIL, SINCE)
    assert err.value.param == "since"


def test_an_unknown_app_or_route_is_a_404_naming_the_filter(data):
    for filters, param in (({"app": "nobody"}, "app"), ({"route": "nope"}, "route")):
        with pytest.raises(FmstackError) as err:
            overview(data, SINCE, UNTIL, **filters)
        assert (err.value.status, err.value.param) == (404, param) and "'no" in err.value.message
    with data.begin() as session:
        session.add(ReviewPolicy(app="quiet", stage="crawl", bars={}))  # a policy, no traffic yet: known
    assert overview(data, SINCE, UNTIL, app="quiet")["totals"]["requests"] == 0
    late = overview(data, NOW + timedelta(hours=1), NOW + timedelta(hours=2), route="shop")  # known, none in range
    assert late["totals"]["requests"] == 0
