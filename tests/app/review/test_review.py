"""Review policies and the review queue on a real store: sampling, decisions and their conflicts, the numbers each
stage reports (checked against hand computation), stage moves, and what reviews feed (a suite, training data)."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from dataclasses import replace

import pytest

from fmstack.app.eval.suite import load_suite
from fmstack.app.review import AlreadyReviewed, move, policy_report
from fmstack.app.review.policy import get_policy, history, save_policy, set_classifier, settings_from
from fmstack.app.review.queue import (
    Verdict,
    assign,
    decide,
    enqueue,
    get_item,
    next_item,
    queue_thumbs_down,
    record_verdict,
)
from fmstack.app.review.sampling import sampled
from fmstack.app.review.service import JUDGE_METRIC, Reviews
from fmstack.app.review.stats import edit_distance
from fmstack.app.review.suite import suite_from_reviews
from fmstack.core.config import get_settings
from fmstack.core.errors import FmstackError, InvalidRequest, NotFound
from fmstack.core.registry import Registry
from fmstack.core.store.schema import ReviewItem, ReviewPolicy, Trace, TraceScore
from fmstack.core.store.traces import add_feedback
from fmstack.gateway import Gateway
from fmstack.model.data.from_traces import export_traces

MODEL = "smollm2-135m-instruct"


@pytest.fixture()
def gateway(home):
    gw = Gateway.open(get_settings())
    yield gw
    gw.close()


@pytest.fixture()
def sessions(gateway):
    return gateway.sessions


def add_trace(session, trace_id: str, question: str, answer: str, app: str = "shop", **extra) -> None:
    request = {"model": MODEL, "messages": [{"role": "user", "content": question}]}
    fields = dict(endpoint="chat.completions", model=MODEL, app=app, request=request, response_text=answer)
    session.add(Trace(id=trace_id, status="ok", status_code=200, **(fields | extra)))
    session.flush()


def new_policy(session, app: str = "shop", stage: str = "crawl", **settings):
    return save_policy(session, Registry(get_settings()), app, settings_from(settings), stage)


def queued(session, policy, trace_id: str, answer: str, reason: str = "crawl", question: str = "q?"):
    add_trace(session, trace_id, question, answer, app=policy.app)
    return enqueue(session, policy, trace_id, answer, reason)


# ---------- sampling ----------


def test_sampling_hits_its_share_over_200_trace_ids_and_is_deterministic():
    rng = random.Random(12)
    ids = [f"chatcmpl-{uuid.UUID(int=rng.getrandbits(128)).hex}" for _ in range(200)]
    for share in (0.1, 0.2, 0.5):
        hits = sum(sampled(i, share) for i in ids)
        assert abs(hits / 200 - share) <= 0.06, (share, hits)  # ~2 standard deviations of a binomial at 200
    assert [sampled(i, 0.2) for i in ids] == [sampled(i, 0.2) for i in ids]
    assert not any(sampled(i, 0) for i in ids) and all(sampled(i, 1) for i in ids)
    # the second-review draw is independent of the review sample
    both = sum(sampled(i, 0.5) and sampled(i, 0.5, "double") for i in ids)
    assert 30 <= both <= 70


# ---------- the numbers, against a hand computation ----------


def test_stats_match_a_hand_computation(sessions):
    """Six decided first reviews (3 approved, 1 edited kitten->sitting, 2 rejected), four of them reviewed twice,
    judge scores on each; the hand computation is in the comments."""
    with sessions.begin() as s:
        policy = new_policy(s, threshold=0.5)
        double = replace(policy, double_share=1.0)
        plan = [  # trace, answer, doubled, decision, judge score (human label, judge label)
            ("t1", "Paris", True, "approve", 0.9),  # 1, 1
            ("t2", "Lima", True, "approve", 0.8),  # 1, 1
            ("t3", "Rome", False, "approve", 0.2),  # 1, 0
            ("t4", "kitten", True, "edit", 0.3),  # 0, 0
            ("t5", "Oslo?", True, "reject", 0.7),  # 0, 1
            ("t6", "Bern?", False, "reject", 0.1),  # 0, 0
        ]
        for trace_id, answer, doubled, _, score in plan:
            queued(s, double if doubled else policy, trace_id, answer)
            record_verdict(s, trace_id, Verdict(score, "why", "judge-x"))
        queued(s, policy, "t7", "pending one")
        queued(s, policy, "t8", "a sample", reason="sampled")
    with sessions.begin() as s:
        for trace_id, _, _, action, _ in plan:
            first = s.query(ReviewItem).filter_by(trace_id=trace_id, copy=0).one()
            decide(s, first.id, action, "alice", text="sitting", reason="wrong", seconds=10)
        # second reviews by bob: t1 approve (1,1), t2 approve (1,1), t4 approve (0,1), t5 reject (0,0)
        for trace_id, action in (("t1", "approve"), ("t2", "approve"), ("t4", "approve"), ("t5", "reject")):
            second = s.query(ReviewItem).filter_by(trace_id=trace_id, copy=1).one()
            decide(s, second.id, action, "bob", reason="wrong", seconds=30)
        decide(s, s.query(ReviewItem).filter_by(trace_id="t8").one().id, "skip", "alice")
    with sessions() as s:
        crawl = policy_report(s, "shop").stages["crawl"]
    assert (crawl.queued, crawl.pending, crawl.reviewed, crawl.skipped) == (8, 1, 6, 1)
    assert (crawl.approved, crawl.edited, crawl.rejected) == (3, 1, 2)
    assert crawl.approval_rate == pytest.approx(3 / 6)
    # edit distance over approved (0) and edited (kitten -> sitting: 3 edits / 7 characters); rejected have none
    assert edit_distance("kitten", "sitting") == pytest.approx(3 / 7)
    assert crawl.edit_distance == pytest.approx((0 + 0 + 0 + 3 / 7) / 4)
    # judge vs human: agreement 4/6; both say "pass" half the time: chance 0.5; kappa (4/6 - 0.5) / 0.5 = 1/3
    assert crawl.judged == 6 and crawl.judge_kappa == pytest.approx(1 / 3)
    # reviewer vs reviewer on (1,1) (1,1) (0,1) (0,0): agreement 3/4; chance 0.5*0.75 + 0.5*0.25 = 0.5; kappa 0.5
    assert crawl.double_reviewed == 4 and crawl.reviewer_kappa == pytest.approx(0.5)
    assert crawl.seconds_per_item == pytest.approx((6 * 10 + 4 * 30) / 10)
    assert crawl.reasons == {"crawl": 7, "sampled": 1}


def test_edit_distance_is_levenshtein_over_the_longer_text():
    assert edit_distance("same", "same") == 0.0
    assert edit_distance("", "new") == 1.0
    assert edit_distance("flaw", "lawn") == pytest.approx(2 / 4)
    assert edit_distance("Straße", "Strasse") == pytest.approx(2 / 7)  # characters, not bytes


# ---------- decisions ----------


def test_decisions_conflicts_and_bad_input(sessions):
    with sessions.begin() as s:
        policy = new_policy(s, stage="walk")
        one = queued(s, policy, "a", "The answer.", reason="sampled")
        two = queued(s, policy, "b", "Another answer.", reason="sampled")
        three = queued(s, policy, "c", "Third.", reason="sampled")
    with sessions.begin() as s:
        assert decide(s, one.id, "approve", "alice").status == "approved"
    with sessions.begin() as s, pytest.raises(AlreadyReviewed, match="already approved by alice") as exc:
        decide(s, one.id, "reject", "bob", reason="late")
    assert exc.value.status == 409
    with sessions.begin() as s:
        for action, fields, param in (
            ("reject", {}, "reason"),
            ("edit", {"text": "  "}, "text"),
            ("shrug", {}, "action"),
            ("approve", {"seconds": -1}, "seconds"),
        ):
            with pytest.raises(InvalidRequest) as bad:
                decide(s, two.id, action, "alice", **fields)
            assert bad.value.param == param
        with pytest.raises(InvalidRequest) as nobody:
            decide(s, two.id, "approve", " ")
        assert nobody.value.param == "reviewer"
        with pytest.raises(NotFound):
            decide(s, 999, "approve", "alice")
    with sessions.begin() as s:
        same = decide(s, two.id, "edit", "alice", text="Another answer. ")  # an edit that changes nothing
        assert (same.status, same.edit_distance) == ("approved", 0.0)
        assert decide(s, three.id, "skip", "alice").status == "skipped"  # a sample: closed unreviewed
    with sessions() as s:
        assert get_item(s, two.id).status == "approved"


def test_next_item_order_assignment_skips_and_second_reviews(sessions):
    with sessions.begin() as s:
        policy = new_policy(s)
        sample = queued(s, replace(policy, stage="walk"), "old", "old sample", reason="sampled")
        held = queued(s, replace(policy, double_share=1.0), "held", "held answer")
        mine = queued(s, policy, "mine", "assigned answer", reason="crawl")
        assign(s, mine.id, "bob")
    with sessions.begin() as s:
        assert next_item(s, "bob").id == mine.id  # assigned to bob comes first
    with sessions.begin() as s:
        got = next_item(s, "alice")
        assert got.trace_id == "held" and got.copy == 0  # a user waits on a crawl answer: before the older sample
    with sessions.begin() as s:
        carol = next_item(s, "carol")
        assert carol.trace_id == "held" and carol.copy == 1  # alice has copy 0 open; carol gets the second review
        # skipping a held crawl answer hands it on: it stays pending, never offered to carol again
        assert decide(s, carol.id, "skip", "carol").status == "pending"
        assert next_item(s, "carol").id == sample.id
    with sessions.begin() as s:
        decide(s, held.id, "approve", "alice")
        with pytest.raises(AlreadyReviewed, match="another reviewer"):
            decide(s, held.id + 1, "approve", "alice")  # the second review must be someone else's
    with sessions.begin() as s:
        # not the second review of an answer she reviewed, nor the sample carol has open
        assert next_item(s, "alice") is None
        decide(s, sample.id, "approve", "carol")
        assert next_item(s, "dave").id == held.id + 1
    with sessions.begin() as s, pytest.raises(AlreadyReviewed):
        assign(s, held.id, "dave")


# ---------- policies and stage moves ----------


def test_policy_validation_names_the_field_and_writes_nothing(sessions):
    cases = [
        ({"judge_model": "no-such-model"}, NotFound, "judge_model"),
        ({"judge_model": "all-minilm-l6-v2"}, InvalidRequest, "judge_model"),
        ({"judge_metric": "correctness"}, InvalidRequest, "judge_metric"),
        ({"bars": {"run": {"min_reviewed": 1}}}, InvalidRequest, "bars"),
        ({"bars": {"crawl": {"min_fun": 1}}}, InvalidRequest, "bars.crawl"),
    ]
    for settings, error, param in cases:
        with sessions.begin() as s, pytest.raises(error) as exc:
            new_policy(s, **settings)
        assert exc.value.param == param
    for values, param in (({"share": 1.5}, "share"), ({"hold_seconds": 0}, "hold_seconds"), ({"x": 1}, "x")):
        with pytest.raises(InvalidRequest) as exc:
            settings_from(values)
        assert exc.value.param == param
    with sessions.begin() as s, pytest.raises(InvalidRequest) as exc:
        new_policy(s, stage="sprint")
    assert exc.value.param == "stage"
    with sessions.begin() as s, pytest.raises(InvalidRequest, match="needs a judge"):
        new_policy(s, stage="run")
    with sessions() as s:
        assert s.query(ReviewPolicy).count() == 0
    with sessions.begin() as s:
        new_policy(s, share=0.3, bars={"crawl": {"min_reviewed": 2}})
        updated = new_policy(s, stage=None, rubric="Be exact.", bars={"crawl": {"min_approval": 0.5}})
        assert (updated.share, updated.rubric) == (0.3, "Be exact.")
        assert updated.bars["crawl"] == {"min_reviewed": 2, "min_approval": 0.5, "max_edit_distance": 0.1}
        with pytest.raises(InvalidRequest, match="review move") as exc:
            new_policy(s, stage="walk")
        assert exc.value.param == "stage"


def test_moves_check_the_bars_one_stage_at_a_time_and_are_recorded(sessions):
    with sessions.begin() as s:
        policy = new_policy(s, bars={"crawl": {"min_reviewed": 2, "min_approval": 0.5}})
        queued(s, policy, "a", "yes")
    for stage, param in (("run", "stage"), ("walk", "stage"), ("crawl", "stage")):
        with sessions.begin() as s, pytest.raises(InvalidRequest) as exc:
            move(s, "shop", stage, "alice")
        assert exc.value.param == param
    with sessions.begin() as s:
        decide(s, 1, "approve", "alice")
        queued(s, policy, "b", "no")
        decide(s, 2, "reject", "alice", reason="wrong")
    with sessions.begin() as s:
        report = move(s, "shop", "walk", "alice")  # 2 reviewed, approval 0.5: the bars hold
        assert report.policy.stage == "walk" and report.ready is False
    with sessions.begin() as s, pytest.raises(InvalidRequest) as exc:
        move(s, "shop", "run", "alice", force=True)  # run without a judge: not even with force
    assert exc.value.param == "judge_model"
    with sessions.begin() as s:
        new_policy(s, stage=None, judge_model=MODEL)
        assert move(s, "shop", "run", "alice", force=True).policy.stage == "run"
    with sessions.begin() as s, pytest.raises(InvalidRequest, match="needs a judge"):
        new_policy(s, stage=None, judge_model="")  # run without its judge: refused
    with sessions.begin() as s:
        assert get_policy(s, "shop").judge_model == MODEL
        assert move(s, "shop", "crawl", "bob").policy.stage == "crawl"  # back: always allowed
    with sessions() as s:
        moves = history(s, "shop")
    assert [(m["from"], m["to"], m["bars_met"], m["forced"]) for m in moves] == [
        (None, "crawl", None, False),
        ("crawl", "walk", True, False),
        ("walk", "run", False, True),
        ("run", "crawl", None, False),
    ]
    assert moves[1]["numbers"]["reviewed"] == 2 and moves[1]["by"] == "alice"
    with sessions() as s, pytest.raises(NotFound):
        policy_report(s, "nope")


# ---------- what reviews feed ----------


def test_suite_from_reviews_has_what_people_accepted(sessions, tmp_path):
    with sessions.begin() as s:
        policy = new_policy(s, judge_model=MODEL)
        queued(s, policy, "ok", "Paris", question="Capital of France?")
        queued(s, policy, "fixed", "Lyon", question="Second city of France?")
        queued(s, policy, "bad", "Berlin", question="Capital of Spain?")
        add_trace(s, "rag", "Where is it?", "In the box.", endpoint="rag.chat.completions")
        enqueue(s, policy, "rag", "In the box.", "crawl")
        decide(s, 1, "approve", "alice")
        decide(s, 2, "edit", "alice", text="Marseille")
        decide(s, 3, "reject", "alice", reason="wrong")
        decide(s, 4, "approve", "alice")
    out = tmp_path / "suite.yaml"
    with sessions() as s:
        result = suite_from_reviews(s, "shop", out)
    assert result.cases == 2 and sum(result.skipped.values()) == 1
    suite = load_suite(out)
    cases = {case.id: case for case, _ in suite.cases}
    assert cases["ok"].reference == "Paris" and cases["fixed"].reference == "Marseille"
    assert cases["fixed"].question == "Second city of France?"
    assert [m.name for m in suite.metrics] == ["token_f1", "correctness"] and suite.spec.judge == {"model": MODEL}
    with sessions.begin() as s:
        new_policy(s, "empty")
    nothing = tmp_path / "none.yaml"
    with sessions() as s, pytest.raises(FmstackError, match="review some first"):
        suite_from_reviews(s, "empty", nothing)
    with sessions() as s, pytest.raises(NotFound):
        suite_from_reviews(s, "unknown", nothing)
    assert not nothing.exists()


def test_from_traces_takes_review_decisions_as_thumbs_and_corrections(sessions, tmp_path):
    with sessions.begin() as s:
        policy = new_policy(s)
        queued(s, policy, "kept", "4", question="2+2?")
        queued(s, policy, "wrong", "5", question="2+2?")
        queued(s, policy, "fixed", "Lyon", question="Capital of France?")
        decide(s, 1, "approve", "alice")
        decide(s, 2, "reject", "alice", reason="wrong sum")
        decide(s, 3, "edit", "alice", text="Paris")
    sft = export_traces(sessions, "sft", tmp_path / "sft.jsonl", app="shop")
    assert dict(sft.counts) == {"approved": 1, "corrected": 1}
    records = [json.loads(line) for line in (tmp_path / "sft.jsonl").read_text().splitlines()]
    assert {r["messages"][-1]["content"] for r in records} == {"4", "Paris"}
    dpo = export_traces(sessions, "dpo", tmp_path / "dpo.jsonl", app="shop")
    assert dict(dpo.counts) == {"corrected": 1, "thumbs up over down": 1}


# ---------- the policies at work ----------


def scripted_classifier(path: str):
    """A stand-in for a trained judge: answers containing "good" pass."""
    assert path == "/judges/scripted"
    return lambda texts: [{"pass": 0.9 if "good" in t else 0.1, "fail": 0.1 if "good" in t else 0.9} for t in texts]


def test_run_judge_sends_low_scores_to_the_queue_and_walk_samples_its_share(gateway):
    from fmstack.app.review.judge import Answered

    sessions = gateway.sessions
    with sessions.begin() as s:
        run = new_policy(s, "bot", stage="run", judge_model=MODEL, share=0.0, threshold=0.7)
        set_classifier(s, "bot", "/judges/scripted")
        walk = new_policy(s, "walker", stage="walk", share=0.5, judge_model=MODEL)
        set_classifier(s, "walker", "/judges/scripted")
        for i, answer in enumerate(["a good answer", "a bad answer", "good again", "bad again"]):
            add_trace(s, f"run-{i}", "q?", answer, app="bot")
        for i in range(40):
            add_trace(s, f"walk-{i}", "q?", "fine", app="walker")
    run = replace(run, judge_classifier="/judges/scripted")
    walk = replace(walk, judge_classifier="/judges/scripted")
    reviews = Reviews(gateway, scripted_classifier)

    async def deliver() -> None:
        for i, answer in enumerate(["a good answer", "a bad answer", "good again", "bad again"]):
            reviews.delivered(run, Answered(f"run-{i}", [{"role": "user", "content": "q?"}], answer))
        for i in range(40):
            reviews.delivered(walk, Answered(f"walk-{i}", None, "fine"))
        await reviews.idle()

    asyncio.run(deliver())
    with sessions() as s:
        items = {i.trace_id: i for i in s.query(ReviewItem)}
        scores = {t.trace_id: t for t in s.query(TraceScore).filter_by(metric=JUDGE_METRIC)}
    assert {t for t in items if t.startswith("run")} == {"run-1", "run-3"}
    assert items["run-1"].reason == "judge-low" and items["run-1"].judge_score == pytest.approx(0.1)
    assert items["run-1"].judge == "classifier:/judges/scripted"
    assert {t for t in scores if t.startswith("run")} == {f"run-{i}" for i in range(4)} and scores[
        "run-0"
    ].passed is True
    walked = {t for t in items if t.startswith("walk")}
    assert walked == {f"walk-{i}" for i in range(40) if sampled(f"walk-{i}", 0.5)} and 8 <= len(walked) <= 32
    # in walk the judge scores the sampled answers too: its agreement with the reviewers is known before run
    assert [items[t].judge_score for t in sorted(walked)] == pytest.approx([0.1] * len(walked))
    assert walked == {t for t in scores if t.startswith("walk")}
    with sessions.begin() as s:
        add_feedback(s, "walk-0", -1, None, None)
        add_feedback(s, "run-0", -1, None, None)
        assert queue_thumbs_down(s, "run-0").reason == "thumbs-down"
        assert queue_thumbs_down(s, "run-0") is None  # queued once
        assert queue_thumbs_down(s, "run-1") is None  # already queued by the judge
