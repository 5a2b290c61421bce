"""AI judges for review, each giving a score from 0 (bad) to 1 (good) that the policy's threshold cuts:

- the generic judge: the eval harness's judge metrics (`rubric`, or `faithfulness` for RAG answers) asked of a chat
  model, exactly as `fmstack eval` asks them;
- a judge trained on this app's reviews (`fmstack train judge`): a MiniLM classifier of "question + answer" into
  pass (approved as it was) or fail (edited or rejected), used when it agrees better with the reviewers.

The reviews of crawl and walk are the labels; this module turns them into training examples, holds some out, and
measures both judges on the held-out ones with Cohen's kappa.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from fmstack.app.eval.calibrate import agreement
from fmstack.app.eval.generate import LocalGenerator
from fmstack.app.eval.metrics import Case, MetricContext, Output, get_metric
from fmstack.app.eval.runner import OutputCache, make_judge, score_one
from fmstack.app.review.policy import Policy, get_policy, set_classifier
from fmstack.app.review.queue import Verdict, conversation
from fmstack.app.review.stats import DECIDED, human_label
from fmstack.core.errors import FmstackError
from fmstack.core.store.schema import JudgeCalibration, ReviewItem, Trace
from fmstack.gateway import Gateway

# A trained judge: texts -> the probability of each label ("pass", "fail") per text.
Classify = Callable[[list[str]], list[dict[str, float]]]
PASS, FAIL = "pass", "fail"
MIN_PER_LABEL = 4  # reviews of each kind (pass, fail) before a judge can be trained and tested on them


@dataclass
class Answered:
    """What a judge sees of one answer: the conversation, the answer, and the passages a RAG answer was given."""

    trace_id: str
    messages: list[dict] | None
    answer: str
    context: list[str] | None = None

    @property
    def question(self) -> str:
        return Case(self.trace_id, self.messages).question

    @classmethod
    def of(cls, trace: Trace, answer: str) -> Answered:
        chunks = (trace.retrieval or {}).get("chunks") or []
        return cls(trace.id, conversation(trace.request), answer, [c["text"] for c in chunks] or None)


def judge_text(answered: Answered) -> str:
    """The trained judge's input: the question and the answer (the classifier's max length cuts long ones)."""
    return f"Question: {answered.question}\nAnswer: {answered.answer}"


def normalized(metric: str, value: float) -> float:
    """A judge metric's score on the 0-1 scale of the threshold: a 1-5 rubric maps 1 to 0 and 5 to 1."""
    return (value - 1) / 4 if metric == "rubric" else value


async def llm_verdict(gateway: Gateway, policy: Policy, answered: Answered) -> Verdict:
    """The generic judge's score, through the eval harness (its judge traces carry the app `fmstack-eval`, so they
    are never reviewed themselves). A judge that fails gives a verdict with the error, never a silent score."""
    model = policy.judge_model
    params = {"rubric": policy.rubric} if policy.rubric and policy.judge_metric == "rubric" else {}
    metric = get_metric(policy.judge_metric, params)
    judge = make_judge(OutputCache(gateway.sessions, True), LocalGenerator(gateway), model)
    case = Case(answered.trace_id, answered.messages, context=answered.context)
    output = Output(answered.answer, [answered.answer])
    score = await asyncio.to_thread(score_one, metric, case, output, MetricContext(None, judge, model))
    if score.value is None:
        return Verdict(None, None, model, score.error or "the judge gave no score")
    return Verdict(normalized(policy.judge_metric, score.value), score.reason, model)


def classifier_verdict(classify: Classify, name: str, answered: Answered) -> Verdict:
    """The trained judge's score: its probability that a reviewer would approve the answer as it is."""
    try:
        probability = classify([judge_text(answered)])[0].get(PASS, 0.0)
    except Exception as exc:  # a broken checkpoint: the answer goes to a person, with the reason
        return Verdict(None, None, name, f"{type(exc).__name__}: {exc}")
    return Verdict(probability, f"trained on reviews: P(approved) = {probability:.2f}", name)


@dataclass
class Reviewed:
    """A reviewed answer as a labelled example, with the generic judge's stored score when it had one."""

    answered: Answered
    label: str
    judge_score: float | None


def reviewed_examples(session: Session, app: str) -> list[Reviewed]:
    """Every answer of the app a person decided on (first reviews only), oldest first."""
    query = (
        select(ReviewItem, Trace)
        .join(Trace, Trace.id == ReviewItem.trace_id)
        .where(ReviewItem.app == app, ReviewItem.copy == 0, ReviewItem.status.in_(DECIDED))
        .order_by(ReviewItem.id)
    )
    return [
        Reviewed(Answered.of(trace, item.answer), PASS if human_label(item.status) else FAIL, item.judge_score)
        for item, trace in session.execute(query)
    ]


def split(examples: list[Reviewed], held_out: float) -> tuple[list[Reviewed], list[Reviewed]]:
    """(train, held out): per label, the `held_out` share with the lowest hash of the trace id, so the split is
    the same on every run and a new review never moves an old one between the two."""
    counts = {label: sum(e.label == label for e in examples) for label in (PASS, FAIL)}
    if min(counts.values()) < MIN_PER_LABEL:
        raise FmstackError(
            f"Too few reviews to train a judge: {counts[PASS]} approved and {counts[FAIL]} edited or rejected; "
            f"each needs at least {MIN_PER_LABEL}. Review more answers (fmstack review next)."
        )
    train, held = [], []
    for label, n in counts.items():
        ranked = sorted((e for e in examples if e.label == label), key=lambda e: _hash(e.answered.trace_id))
        cut = max(2, round(n * held_out))
        held += ranked[:cut]
        train += ranked[cut:]
    return train, held


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def judge_agreement(held: list[Reviewed], verdicts: list[Verdict], threshold: float) -> dict[str, Any]:
    """A judge's agreement with the reviewers on the held-out reviews (pass/fail labels; failed verdicts are
    counted as errors and left out)."""
    human = [int(e.label == PASS) for e in held]
    judged = [None if v.score is None else int(v.score >= threshold) for v in verdicts]
    return agreement(human, judged, labels=[0, 1])


def record_agreement(session: Session, app: str, judge: str, result: dict[str, Any]) -> None:
    """Keep the measurement beside `fmstack eval calibrate`'s (metric `review:APP`)."""
    session.add(
        JudgeCalibration(
            judge=judge,
            metric=f"review:{app}",
            n=result["n"],
            accuracy=result["accuracy"],
            kappa=result["kappa"],
            details={k: v for k, v in result.items() if k in ("confusion", "judge_errors", "verdict", "band")},
        )
    )


def better(trained: dict[str, Any], generic: dict[str, Any] | None) -> bool:
    """Whether the trained judge agrees better with the reviewers than the generic one (an undefined kappa loses)."""
    mine = trained["kappa"]
    theirs = generic["kappa"] if generic else None
    return mine is not None and (theirs is None or mine > theirs)


@dataclass
class JudgeTraining:
    """`fmstack train judge`: both judges' agreement with the reviewers on the same held-out reviews, and the one
    the policy uses from now on."""

    app: str
    checkpoint: Path
    train_examples: int
    held_out: int
    trained: dict[str, Any]
    generic_judge: str | None
    generic: dict[str, Any] | None
    used: str | None
    summary: dict[str, Any] = field(default_factory=dict)


def train_judge(
    gateway: Gateway,
    app: str,
    checkpoint: Path,
    *,
    train: Callable[[Path, Path], dict[str, Any]],
    load: Callable[[Path], Classify],
    held_out: float = 0.25,
) -> JudgeTraining:
    """Train a judge on the app's reviews, measure it and the generic judge on held-out reviews, record both, and
    point the policy at whichever agrees better with the reviewers. `train` (labelled JSONL, checkpoint folder) ->
    summary and `load` (checkpoint) -> classifier are the model layer's, handed in by the caller."""
    with gateway.sessions() as session:
        policy = get_policy(session, app)
        train_set, held = split(reviewed_examples(session, app), held_out)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "reviews.jsonl"
        rows = ({"text": judge_text(e.answered), "label": e.label} for e in train_set)
        data.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        summary = train(data, checkpoint)
    name = f"classifier:{checkpoint}"
    classify = load(checkpoint)
    trained = judge_agreement(held, [classifier_verdict(classify, name, e.answered) for e in held], policy.threshold)
    generic = _generic_agreement(gateway, policy, held)
    use_trained = better(trained, generic)
    with gateway.sessions.begin() as session:
        record_agreement(session, app, name, trained)
        if generic is not None:
            record_agreement(session, app, policy.judge_model or "stored judge scores", generic)
        set_classifier(session, app, str(checkpoint) if use_trained else None)
    used = name if use_trained else policy.judge_model
    return JudgeTraining(
        app, checkpoint, len(train_set), len(held), trained, policy.judge_model, generic, used, summary
    )


def _generic_agreement(gateway: Gateway, policy: Policy, held: list[Reviewed]) -> dict[str, Any] | None:
    """The generic judge on the held-out reviews: its stored score where it judged the answer when it was queued,
    else asked now; None when the policy has no generic judge and none were judged."""
    if policy.judge_model is None and all(e.judge_score is None for e in held):
        return None

    async def verdicts() -> list[Verdict]:
        out = []
        for e in held:
            if e.judge_score is not None:
                out.append(Verdict(e.judge_score, None, policy.judge_model or "stored"))
            elif policy.judge_model is not None:
                out.append(await llm_verdict(gateway, policy, e.answered))
            else:
                out.append(Verdict(None, None, "stored", "not judged"))
        return out

    return judge_agreement(held, asyncio.run(verdicts()), policy.threshold)
