"""The shipped Grafana dashboard (examples/grafana/fmstack.json) asks only for series that /metrics exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path

from fmstack.core.metrics import Metrics
from fmstack.core.store.review_counts import ReviewCounts

DASHBOARD = Path(__file__).resolve().parents[2] / "examples" / "grafana" / "fmstack.json"


def exposed() -> set[str]:
    """The metric names /metrics shows once every kind of request has been observed."""
    reviews = ReviewCounts(
        stages={"shop": "crawl"},
        pending={("shop", "crawl"): 1},
        decisions={("shop", "approved"): 2},
        seconds={"shop": 9.0},
        held={"shop": 1},
        answered={"shop": 4},
        before_delivery={"shop": 3},
    )
    metrics = Metrics(lambda: {"m": 0}, lambda: [("rubric", "m", 0.5, 3)], lambda: reviews)
    row = {"model": "m", "engine": "llamacpp", "endpoint": "chat.completions", "status": "ok", "prompt_tokens": 5,
           "completion_tokens": 4, "cost": 0.1, "latency_ms": 100.0, "ttft_ms": 10.0, "cached_tokens": 2,
           "draft_tokens": 3, "accepted_tokens": 2, "route": "shop", "variant": "m"}
    metrics.observe(row)
    metrics.observe(row | {"status": "error"})
    metrics.in_flight.labels("m").inc()  # as a call does while it runs
    text = metrics.render().decode()
    return set(re.findall(r"^(fmstack_\w+)", text, re.M))


def test_every_query_names_a_metric_that_is_exposed():
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    queries += [v["query"]["query"] for v in dashboard["templating"]["list"]]
    names = {n for q in queries for n in re.findall(r"\bfmstack_\w+", q)}
    assert names and names <= exposed(), names - exposed()
    assert {"fmstack_ab_requests_total", "fmstack_ab_request_latency_seconds_bucket"} <= names
    review = {"fmstack_review_queue_depth", "fmstack_review_held_answers", "fmstack_reviews_total"}
    review |= {"fmstack_review_answers_total", "fmstack_review_seconds_total", "fmstack_review_stage"}
    assert review <= names, review - names
