"""`fmstack ab report` on fixed traces: every number checked against a computation by hand."""

from __future__ import annotations

import json
import math
import re
from datetime import timedelta

import numpy as np
import pytest

from fmstack.app.ab import build_report
from fmstack.app.ab.stats import diff_ci, mean_ci
from fmstack.core.errors import FmstackError
from tests.app.ab.helpers import NOW, A, B, add_trace, routes


@pytest.fixture()
def store(home):
    store = routes(home)
    store.create("shop", {A: 90, B: 10})
    return store


def test_the_numbers_per_variant_match_a_hand_computation(store):
    s = store.sessions
    ratings = [(1,), (1, -1), (-1,), (), ()]  # latest rating per trace: up, down, down → 1/3 up
    reviews = [
        (("approved", "sampled", 30.0),),
        (("edited", "sampled", 60.0),),
        (("rejected", "thumbs-down", 20.0),),
        (("pending", "sampled", None),),  # not decided: not counted
        (("approved", "sampled", 10.0), ("rejected", "sampled", 5.0)),  # the second review (copy 1) does not count
    ]
    scores = [(("rubric", 0.2), ("rubric", 0.4)), (("rubric", 0.6),), (), (), ()]  # latest per trace: 0.4, 0.6
    for i in range(5):
        add_trace(s, A, latency=100.0 * (i + 1), ttft=10.0 * (i + 1), cost=0.001 * i, ratings=ratings[i],
                  reviews=reviews[i], scores=scores[i])
    add_trace(s, A, status="error", latency=5.0)
    add_trace(s, A, status="cancelled", latency=7.0)
    for i in range(6):
        add_trace(s, B, latency=150.0 + 100 * i, ttft=20.0, cost=0.002, ratings=(1,),
                  reviews=(("approved", "sampled", 15.0),), scores=(("rubric", 0.9),))
    add_trace(s, B, latency=1.0, at=NOW - timedelta(days=3))  # outside --since
    add_trace(s, A, route="other", latency=1.0)  # another route

    report = build_report(s, store.get("shop"), since=NOW - timedelta(days=1))
    a, b = report.variants
    assert (a.name, a.weight, a.requests, a.answered) == (A, 90, 7, 5)
    assert (b.name, b.weight, b.requests, b.answered) == (B, 10, 6, 6)
    expected_a = {"latency": (5, 300.0), "ttft": (5, 30.0), "cost": (5, 0.002), "errors": (6, 1 / 6),
                  "thumbs": (3, 1 / 3), "approval": (4, 0.5), "score:rubric": (2, 0.5)}
    expected_b = {"latency": (6, 400.0), "ttft": (6, 20.0), "cost": (6, 0.002), "errors": (6, 0.0),
                  "thumbs": (6, 1.0), "approval": (6, 1.0), "score:rubric": (6, 0.9)}
    for variant, expected in ((a, expected_a), (b, expected_b)):
        got = {k: (e.n, e.mean) for k, e in variant.estimates.items()}
        assert got == {k: (n, pytest.approx(m)) for k, (n, m) in expected.items()}
        assert all(e.low <= e.mean + 1e-12 and e.mean <= e.high + 1e-12 for e in variant.estimates.values())
    diffs = {c.metric: (c.diff, c.outcome) for c in report.comparisons}
    assert diffs["latency"] == (pytest.approx(100.0), "same")  # the two spreads overlap widely
    assert diffs["ttft"][0] == pytest.approx(-10.0)
    assert diffs["errors"][0] == pytest.approx(-1 / 6)
    assert diffs["thumbs"] == (pytest.approx(2 / 3), "too few")  # 3 rated traces on A: under 5
    assert diffs["approval"] == (pytest.approx(0.5), "too few")
    assert diffs["score:rubric"] == (pytest.approx(0.4), "too few")
    assert report.baseline == A and [m.key for m in report.metrics][-1] == "score:rubric"
    json.dumps(report.to_dict(), allow_nan=False)  # strict JSON: no NaN anywhere


def test_the_verdict_says_where_a_variant_is_better_or_worse_with_numbers(store):
    for i in range(6):
        add_trace(store.sessions, A, latency=100.0 + 10 * i, reviews=(("rejected", "sampled", 9.0),))
        add_trace(store.sessions, B, latency=100.0 + 10 * i, reviews=(("approved", "sampled", 9.0),))
    report = build_report(store.sessions, store.get("shop"))
    assert report.verdict(B) == (
        f"{B} vs {A}: better on approval, +100 pts [100, 100]; "
        "no difference in latency, TTFT, cost, error rate; too few samples for thumbs up (need 5 a side)"
    )
    for i in range(6):
        add_trace(store.sessions, B, latency=1000.0 + 10 * i)
    verdict = build_report(store.sessions, store.get("shop")).verdicts()[B]
    assert re.search(r"worse on latency, \+\d+ ms \[\d+, \d+\]", verdict), verdict


def test_an_unknown_baseline_names_the_field(store):
    with pytest.raises(FmstackError) as err:
        build_report(store.sessions, store.get("shop"), baseline="nope")
    assert err.value.param == "baseline"
    assert build_report(store.sessions, store.get("shop"), baseline=B).baseline == B


def test_the_interval_of_a_difference_matches_the_normal_approximation():
    """For large arms the bootstrap interval of a difference of means is the textbook b̄ − ā ± 1.96·SE."""
    a = np.array([i % 100 for i in range(400)], dtype=float)
    b = a + 10
    diff, low, high = diff_ci(a, b)
    se = math.sqrt(a.var() / len(a) + b.var() / len(b))
    assert diff == pytest.approx(10.0)
    assert low == pytest.approx(10 - 1.96 * se, abs=0.15 * se) and high == pytest.approx(10 + 1.96 * se, abs=0.15 * se)
    yes_a, yes_b = [1.0] * 200 + [0.0] * 200, [1.0] * 240 + [0.0] * 160  # 0/1 outcomes: binomial resampling
    diff, low, high = diff_ci(yes_a, yes_b)
    se = math.sqrt(0.5 * 0.5 / 400 + 0.6 * 0.4 / 400)
    assert diff == pytest.approx(0.1) and low == pytest.approx(0.1 - 1.96 * se, abs=0.15 * se)
    assert high == pytest.approx(0.1 + 1.96 * se, abs=0.15 * se)
    assert mean_ci([]) == (pytest.approx(math.nan, nan_ok=True),) * 3 and mean_ci([3.0]) == (3.0, 3.0, 3.0)
