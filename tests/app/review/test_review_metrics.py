"""The review numbers on /metrics come from the store: queue depth per app and reason, decisions, reviewer time,
held crawl answers and the share of answers delivered with no person, checked against a hand count, and they move
when a reviewer decides (also a decision made by another process: nothing is counted in memory)."""

from __future__ import annotations

import pytest

from fmstack.app.review.queue import decide, enqueue
from fmstack.core.config import get_settings
from fmstack.core.store.schema import Trace
from fmstack.gateway import Gateway
from tests.app.review.test_review import new_policy
from tests.server.test_traces_and_metrics import metric


@pytest.fixture()
def gateway(home):
    gw = Gateway.open(get_settings())
    yield gw
    gw.close()


def answered(session, trace_id: str, app: str, status: str = "ok") -> None:
    request = {"messages": [{"role": "user", "content": "q?"}]}
    session.add(
        Trace(
            id=trace_id,
            endpoint="chat.completions",
            app=app,
            status=status,
            status_code=200,
            request=request,
            response_text="a.",
        )
    )
    session.flush()


def scrape(gateway: Gateway) -> str:
    return gateway.metrics.render().decode()


def test_review_metrics_match_a_hand_count_and_move_with_decisions(gateway):
    with gateway.sessions.begin() as s:
        crawl = new_policy(s, "shop", stage="crawl")
        walk = new_policy(s, "help", stage="walk", share=0.5)
        for i in range(4):  # shop: 4 answers, all held for a person; 1 failed request (not an answer)
            answered(s, f"shop-{i}", "shop")
            enqueue(s, crawl, f"shop-{i}", "a.", "crawl")
        answered(s, "shop-err", "shop", status="error")
        for i in range(10):  # help: 10 answers delivered at once, 3 of them sampled, 1 thumbs-down
            answered(s, f"help-{i}", "help")
        for i, reason in enumerate(("sampled", "sampled", "sampled", "thumbs-down")):
            enqueue(s, walk, f"help-{i}", "a.", reason)
        answered(s, "other-1", "no-policy")  # an app without review gets no series
        decide(s, 1, "approve", "alice", seconds=4.0)  # shop-0 released
        decide(s, 2, "reject", "alice", reason="wrong", seconds=6.0)  # shop-1 released (as an error)
        decide(s, 5, "skip", "bob", seconds=1.0)  # help-0: a skipped sample, not a review
    text = scrape(gateway)
    assert metric(text, "fmstack_review_stage", app="shop", stage="crawl") == 1
    assert metric(text, "fmstack_review_queue_depth", app="shop") == 2
    assert metric(text, "fmstack_review_queue_depth", app="help", reason="sampled") == 2
    assert metric(text, "fmstack_review_queue_depth", app="help", reason="thumbs-down") == 1
    assert metric(text, "fmstack_review_held_answers", app="shop") == 2
    assert metric(text, "fmstack_review_held_answers", app="help") == 0
    assert metric(text, "fmstack_reviews_total", app="shop", decision="approved") == 1
    assert metric(text, "fmstack_reviews_total", app="shop", decision="rejected") == 1
    assert metric(text, "fmstack_reviews_total", app="help", decision="skipped") == 1
    assert metric(text, "fmstack_review_seconds_total", app="shop") == 10.0
    assert metric(text, "fmstack_review_seconds_total", app="help") == 0.0  # skipping is not reviewing
    assert metric(text, "fmstack_review_answers_total", app="shop", delivery="human") == 4
    assert metric(text, "fmstack_review_answers_total", app="shop", delivery="automated") == 0
    assert metric(text, "fmstack_review_answers_total", app="help", delivery="automated") == 10
    assert metric(text, "fmstack_review_automated_share", app="shop") == 0
    assert metric(text, "fmstack_review_automated_share", app="help") == 1
    assert 'app="no-policy"' not in text

    with gateway.sessions.begin() as s:  # the CLI, another process, decides: the next scrape sees it
        decide(s, 3, "edit", "carol", text="b.", seconds=2.0)
        answered(s, "shop-4", "shop")  # the app moved on to walk: delivered with no person
    moved = scrape(gateway)
    assert metric(moved, "fmstack_review_held_answers", app="shop") == 1
    assert metric(moved, "fmstack_review_queue_depth", app="shop") == 1
    assert metric(moved, "fmstack_reviews_total", app="shop", decision="edited") == 1
    assert metric(moved, "fmstack_review_seconds_total", app="shop") == 12.0
    assert metric(moved, "fmstack_review_answers_total", app="shop", delivery="automated") == 1
    assert metric(moved, "fmstack_review_automated_share", app="shop") == pytest.approx(1 / 5)
